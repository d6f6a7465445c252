"""The toolkit: schemas from Python functions, golden Hermes parses, argument checks, raising and hanging tools,
a user's ToolEnv, and the `tools` env's schemas reaching the chat template across the process boundary."""

import asyncio
import json
import re
import threading
import time
from typing import Literal

import pytest
from transformers import AutoTokenizer

from actors.agent_loop import run_agent
from actors.engine import Completion
from actors.render import hermes_system_message
from envs import make_env
from envs.base import Task
from envs.process import EnvProcess
from envs.toolkit import ToolCall, ToolCallError, ToolEnv, ToolResult, check_arguments, parse_hermes, tool

FORECAST = {  # an OpenAI-style schema, given with a callable instead of derived from a function
    "type": "function",
    "function": {
        "name": "forecast",
        "description": "The forecast of a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "nullable": True}},
            "required": ["city"],
        },
    },
}


def get_temperature(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> float:
    """The temperature in a city now.

    Args:
        city: the city's name
        unit: the unit of the answer
    """
    return -3.5 if unit == "celsius" else 25.7


UNIT = "the unit of the answer"


def test_a_functions_schema_comes_from_its_signature_type_hints_and_docstring():
    assert tool(get_temperature).schema == {
        "type": "function",
        "function": {
            "name": "get_temperature",
            "description": "The temperature in a city now.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "the city's name"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": UNIT},
                },
                "required": ["city"],
            },
            "return": {"type": "number"},
        },
    }
    given = tool(lambda city, days=None: {"city": city, "days": days}, FORECAST)
    assert (given.name, given.schema, given.function("Oslo", 2)) == ("forecast", FORECAST, {"city": "Oslo", "days": 2})


@pytest.mark.parametrize(
    "schema, says",
    [
        ({"name": "f"}, 'a tool schema is {"type": "function", "function": {...}}'),
        ({"type": "function", "function": {"description": "no name"}}, "needs function.name, a non-empty string"),
        ({"type": "function", "function": {"name": "f", "parameters": []}}, "tool f: parameters must be a JSON schema"),
    ],
)
def test_malformed_schemas_are_rejected_saying_what_is_wrong(schema, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        tool(print, schema)


A, B = ToolCall("get_price", {"item": "mug"}), ToolCall("submit", {"answer": 3})
GOLDEN_PARSES = [
    ('<tool_call>{"name": "get_price", "arguments": {"item": "mug"}}</tool_call>', [A]),
    ('<tool_call>\n{"name": "submit", "arguments": {"answer": 3}}\n', [B]),  # the closing tag was cut off
    ('<tool_call>{"name": "submit", "arguments": "{\\"answer\\": 3}"}</tool_call>', [B]),  # OpenAI-style string
    ('<tool_call>{"name": "get_price", "parameters": {"item": "mug"}}</tool_call> ok', [A]),
    ('Sure. {"name": "get_price", "arguments": {"item": "mug"}} {"name": "submit", "arguments": {}}', [A]),  # bare
    ('{"name": "get_price"}', [ToolCall("get_price", {})]),
    (
        'Two: <tool_call>{"name": "get_price", "arguments": {"item": "mug"}}</tool_call>\n<tool_call>'
        '{"name": "submit", "arguments": {"answer": 3}}</tool_call>',
        [A, B],
    ),
    (
        '<tool_call>{"name": "get_price", "arguments": {"item": "mug"}}<tool_call>{"name": "submit", "arguments": '
        '{"answer": 3}}</tool_call>',
        [A, B],
    ),
]


@pytest.mark.parametrize("action, calls", GOLDEN_PARSES)
def test_hermes_calls_parse_to_golden_calls(action, calls):
    assert parse_hermes(action) == calls


NEEDS = 'A tool call needs "name" (a string) and "arguments" (an object); got'
NO_CALL = 'No tool call found. Call a tool as <tool_call>{"name": "...", "arguments": {...}}</tool_call>.'
GOLDEN_ERRORS = [
    ("the answer is 42", NO_CALL),
    ("<tool_call></tool_call>", NO_CALL),
    (
        '<tool_call>{"name": "get_order", "arguments": {"order_id": }</tool_call>',
        "Malformed JSON in the tool call: Expecting value at character 48.",
    ),
    ('{"tool": "get_order"}', f'{NEEDS} {{"tool": "get_order"}}.'),
    (
        '{"name": "submit", "arguments": "{answer: 3}"}',
        "Malformed JSON in the tool call's arguments: Expecting property name enclosed in double quotes.",
    ),
    ('{"name": "submit", "arguments": [3]}', f'{NEEDS} {{"name": "submit", "arguments": [3]}}.'),
    (
        '<tool_call>{"name": "get_price", "arguments": {}}</tool_call><tool_call>{"name": ',
        "Malformed JSON in the tool call: Expecting value at character 9.",
    ),  # a later call cut off
]


@pytest.mark.parametrize("action, message", GOLDEN_ERRORS)
def test_garbage_raises_a_tool_call_error_saying_what_is_wrong(action, message):
    with pytest.raises(ToolCallError) as caught:
        parse_hermes(action)
    assert str(caught.value) == message


FORECAST_SIGNATURE = 'forecast takes arguments {"city": string, "days": integer | null (optional)}'


@pytest.mark.parametrize(
    "arguments, checked",
    [
        ({"city": "Oslo"}, {"city": "Oslo"}),
        ({"city": "Oslo", "days": "3"}, {"city": "Oslo", "days": 3}),  # small models quote numbers
        ({"city": "Oslo", "days": 2.0}, {"city": "Oslo", "days": 2}),
        ({"city": "Oslo", "days": None}, {"city": "Oslo", "days": None}),
    ],
)
def test_arguments_that_fit_the_schema_pass_converted(arguments, checked):
    assert check_arguments(tool(print, FORECAST), arguments) == checked


@pytest.mark.parametrize(
    "arguments, problems",
    [
        ({}, "missing 'city'"),
        ({"city": "Oslo", "country": "NO"}, "unexpected 'country'"),
        ({"city": 3, "days": "soon"}, "'city' must be string, 'days' must be integer | null"),
        ({"city": "Oslo", "days": True}, "'days' must be integer | null"),
        ({"city": "Oslo", "days": 2.5}, "'days' must be integer | null"),
    ],
)
def test_arguments_that_do_not_fit_say_what_was_expected(arguments, problems):
    with pytest.raises(ValueError) as caught:
        check_arguments(tool(print, FORECAST), arguments)
    assert str(caught.value) == f"{FORECAST_SIGNATURE}; got {json.dumps(arguments)} ({problems})"


class Weather(ToolEnv):
    """A user's env: what is the temperature in Oslo? Two lookup tools (one given as a schema) and submit."""

    def __init__(self, call_timeout_s: float = 0.5):
        self.release = threading.Event()  # lets a hung call finish once the test is over
        tools = [tool(self.get_temperature), tool(self.forecast, FORECAST), tool(self.submit)]
        super().__init__(tools, max_steps=6, call_timeout_s=call_timeout_s)

    def tasks(self, split: str) -> list[Task]:
        return [Task("weather-0", 0)]

    def start(self, task: Task) -> str:
        return "What is the temperature in Oslo now?"

    def get_temperature(self, city: str) -> float:
        """The temperature in a city now, in degrees Celsius.

        Args:
            city: the city's name
        """
        if city == "Slowtown":
            self.release.wait(30)
        return {"Oslo": -3.5}[city]  # any other city raises KeyError

    def forecast(self, city: str, days: int | None = None) -> str:
        return f"{city}: snow for {days or 1} days"

    def submit(self, answer: float) -> ToolResult:
        """Give the temperature; ends the task.

        Args:
            answer: the temperature in degrees Celsius
        """
        right = answer == -3.5
        return ToolResult({"result": "correct" if right else "wrong"}, float(right), done=True, success=right)


def call(name: str, **arguments) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def test_a_user_tool_env_runs_calls_and_reports_raising_and_hanging_tools():
    env = Weather()
    assert env.reset(env.tasks("train")[0]) == "What is the temperature in Oslo now?"
    assert [t["function"]["name"] for t in env.tools()] == ["get_temperature", "forecast", "submit"]
    raised = env.step(call("get_temperature", city="Atlantis"))
    assert (raised.observation, raised.role, raised.done) == (
        '{"error": "get_temperature raised KeyError: \'Atlantis\'"}',
        "tool",
        False,
    )
    began = time.monotonic()
    hung = env.step(call("get_temperature", city="Slowtown"))
    waited = time.monotonic() - began
    assert hung.observation == '{"error": "get_temperature did not answer within 0.5 s"}' and 0.5 <= waited < 1.5
    began = time.monotonic()
    several = env.step(call("get_temperature", city="Oslo") + call("submit", answer=-3.5))
    assert time.monotonic() - began < 0.2  # the abandoned call does not hold up the next step
    assert several.observation == "-3.5\n(Only the first tool call of a turn runs; 1 more ignored.)"
    assert env.step(call("forecast", city="Oslo", days="2")).observation == "Oslo: snow for 2 days"
    unparsed = env.step("It is cold.")
    assert (unparsed.observation, unparsed.role) == (NO_CALL, "user")
    last = env.step(call("submit", answer="-3.5"))
    assert (last.observation, last.reward, last.done, last.success, last.role) == (
        '{"result": "correct"}',
        1.0,
        True,
        True,
        "tool",
    )
    env.release.set()


def test_max_steps_ends_a_tool_env_without_success():
    env = Weather()
    env.reset(env.tasks("train")[0])
    results = [env.step(call("get_temperature", city="Oslo")) for _ in range(6)]
    assert [r.done for r in results] == [False] * 5 + [True]
    assert (results[-1].observation, results[-1].success) == ("-3.5\nTime is up.", False)


class ToolEngine:
    """Solves the `tools` task from the text it sees: get_order, then get_price, then submit the product."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    async def generate(self, prompt_ids: list[int], *, max_tokens: int, temperature: float) -> Completion:
        text = self.tokenizer.decode(prompt_ids)
        order_id = re.search(r"total price of order (\S+) ", text).group(1)
        order, price = re.search(r'"item": "(\w+)", "quantity": (\d+)', text), re.search(r'"unit_price": (\d+)', text)
        if order is None:
            action = call("get_order", order_id=order_id)
        elif price is None:
            action = call("get_price", item=order.group(1))
        else:
            action = call("submit", answer=int(order.group(2)) * int(price.group(1)))
        ids = self.tokenizer.encode(action + self.tokenizer.eos_token, add_special_tokens=False)
        return Completion(token_ids=ids, logp=[-0.5] * len(ids), finish_reason="stop")


def test_tools_reach_the_chat_template_across_the_process_boundary(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    options = {"failure_rate": 0.0, "latency_s": 0.0}
    task = make_env("tools").tasks("train")[0]

    async def main():
        process = await EnvProcess.start(step_timeout_s=10.0, reset_timeout_s=30.0)
        try:
            process.make("tools", 0, options)
            limits = dict(max_steps=4, max_tokens=64, max_trajectory_tokens=8192, temperature=1.0)
            with pytest.warns(UserWarning, match="ignores tools="):
                trajectory = await run_agent(
                    process, task, ToolEngine(tokenizer), tokenizer, trajectory_id="t", group_id="g", **limits
                )
            return trajectory, process.tools
        finally:
            await process.close()

    trajectory, tools = asyncio.run(asyncio.wait_for(main(), 60))
    assert tools == make_env("tools").tools() and [t["function"]["name"] for t in tools][-1] == "submit"
    assert (trajectory.finish_reason, trajectory.success, trajectory.num_steps) == ("done", True, 3)
    assert trajectory.outcome == pytest.approx(1.0)
    text = tokenizer.decode(trajectory.tokens)
    # The template ignores tools=, so they come as the Hermes system message; tool results in the tool role.
    assert text.startswith(f"<|im_start|>system\n{hermes_system_message(tools)}<|im_end|>\n<|im_start|>user\n")
    assert text.count("<|im_start|>tool\n") == 2
