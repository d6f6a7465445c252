"""[env] Tools (`tools`): a multi-step tool-calling env. The policy looks facts up with JSON tool calls and submits.

A task asks for the total price of one order: get_order gives its item and quantity, get_price the item's unit
price, calculate does arithmetic, submit ends the task. Tool calls use the Hermes format of ChatML templates,
`<tool_call>{"name": "get_price", "arguments": {"item": "lamp"}}</tool_call>` (a bare JSON object counts too).
A tool's result is an observation with info {"role": "tool"}: the agent loop renders it in the chat template's
tool role. The lookup tools fail at random ("service unavailable, try again"; draws seeded by the env seed)
and every tool call takes latency_s. Reward: useful_call_reward for the first successful lookup of the
order and of its item's price, the rest of 1.0 for the right answer, so a solved task's outcome is 1.0.
"""

import ast
import json
import math
import operator
import random
import re
import time

from envs.base import StepResult, Task
from envs.tasks import split_tasks

ITEMS = ("lamp", "kettle", "chair", "desk", "mug", "towel", "pillow", "clock", "vase", "rug")
TOOLS = {  # name -> (arguments and their JSON types, what it does)
    "get_order": ({"order_id": "string"}, "the item and quantity of an order"),
    "get_price": ({"item": "string"}, "the unit price of an item"),
    "calculate": ({"expression": "string"}, 'evaluate arithmetic, e.g. "3 * 12"'),
    "submit": ({"answer": "number"}, "give the final answer; ends the task"),
}
LOOKUPS = ("get_order", "get_price")  # the tools that call a flaky "service"
OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


class ToolCallError(ValueError):
    """The action holds no well-formed tool call; the message says what is wrong."""


class Tools:
    def __init__(
        self,
        seed: int = 0,
        max_steps: int = 8,
        num_tasks: int = 512,
        failure_rate: float = 0.2,
        latency_s: float = 0.01,
        useful_call_reward: float = 0.1,
        num_orders: int = 3,
    ):
        if not 0.0 <= failure_rate < 1.0:
            raise ValueError(f"tools: failure_rate must be in [0, 1), got {failure_rate}")
        if latency_s < 0 or not 0.0 <= useful_call_reward <= 0.5:
            raise ValueError(
                f"tools: need latency_s >= 0 and useful_call_reward in [0, 0.5], got {latency_s}, {useful_call_reward}"
            )
        if not 1 <= num_orders <= 10:
            raise ValueError(f"tools: num_orders must be in 1..10, got {num_orders}")
        self.max_steps, self.num_tasks, self.num_orders = max_steps, num_tasks, num_orders
        self.failure_rate, self.latency_s, self.useful_call_reward = failure_rate, latency_s, useful_call_reward
        self._luck = random.Random(seed)  # tool failures; the task's facts come from the task seed
        self._orders: dict[str, tuple[str, int]] = {}
        self._prices: dict[str, int] = {}
        self._asked = ""
        self._steps, self._earned, self._credited = 0, 0.0, set()

    def tasks(self, split: str) -> list[Task]:
        return split_tasks("tools", split, self.num_tasks)

    def reset(self, task: Task) -> str:
        layout = random.Random(task.seed)
        self._prices = {item: layout.randint(2, 40) for item in ITEMS}
        ids = layout.sample(range(10, 100), self.num_orders)
        self._orders = {f"{layout.choice('ABCDEFGH')}-{i}": (layout.choice(ITEMS), layout.randint(2, 9)) for i in ids}
        self._asked = layout.choice(sorted(self._orders))
        self._steps, self._earned, self._credited = 0, 0.0, set()
        tools = "\n".join(
            f"- {name}({', '.join(f'{arg}: {kind}' for arg, kind in args.items())}): {what}"
            for name, (args, what) in TOOLS.items()
        )
        return (
            f"What is the total price of order {self._asked} (its quantity times the item's unit price)?\n"
            f"Tools:\n{tools}\nCall one tool per turn, e.g. "
            f'<tool_call>{{"name": "get_order", "arguments": {{"order_id": "{self._asked}"}}}}</tool_call>'
        )

    def step(self, action: str) -> StepResult:
        self._steps += 1
        try:
            name, arguments = parse_tool_call(action)
        except ToolCallError as error:
            return self._next(str(error), 0.0, role="user")  # no call was made: the env answers as the user
        time.sleep(self.latency_s)
        error = argument_error(name, arguments)
        if error:
            return self._next(json.dumps({"error": error}), 0.0, role="tool")
        if name == "submit":
            return self._submit(float(arguments["answer"]))
        result, reward = self._call(name, {arg: value.strip() for arg, value in arguments.items()})
        return self._next(json.dumps(result), reward, role="tool")

    def _call(self, name: str, arguments: dict[str, str]) -> tuple[dict, float]:
        """Run one checked call of a tool other than submit; returns (result, reward)."""
        if name in LOOKUPS and self._luck.random() < self.failure_rate:
            return {"error": "service unavailable, try again"}, 0.0
        if name == "get_order":
            order = self._orders.get(arguments["order_id"])
            if order is None:
                return {"error": f"no order {arguments['order_id']!r}"}, 0.0
            reward = self._credit("order", arguments["order_id"] == self._asked)
            return {"order_id": arguments["order_id"], "item": order[0], "quantity": order[1]}, reward
        if name == "get_price":
            item = arguments["item"].lower()
            if item not in self._prices:
                return {"error": f"no item {arguments['item']!r}"}, 0.0
            reward = self._credit("price", item == self._orders[self._asked][0])
            return {"item": item, "unit_price": self._prices[item]}, reward
        try:
            return {"result": calculate(arguments["expression"])}, 0.0
        except ValueError as error:
            return {"error": str(error)}, 0.0

    def _credit(self, what: str, useful: bool) -> float:
        """useful_call_reward the first time `what` is looked up for the asked order, else 0."""
        if not useful or what in self._credited:
            return 0.0
        self._credited.add(what)
        self._earned += self.useful_call_reward
        return self.useful_call_reward

    def _submit(self, answer: float) -> StepResult:
        item, quantity = self._orders[self._asked]
        total = quantity * self._prices[item]
        if abs(answer - total) < 1e-6:
            return StepResult(
                json.dumps({"result": "correct"}), 1.0 - self._earned, True, {"success": True, "role": "tool"}
            )
        text = json.dumps({"result": f"wrong: order {self._asked} costs {total}"})
        return StepResult(text, 0.0, True, {"success": False, "role": "tool"})

    def _next(self, text: str, reward: float, role: str) -> StepResult:
        if self._steps >= self.max_steps:
            return StepResult(text + "\nTime is up.", reward, True, {"success": False, "role": role})
        return StepResult(text, reward, False, {"role": role})


def parse_tool_call(action: str) -> tuple[str, dict]:
    """(name, arguments) of the first tool call in the action text; raises ToolCallError saying what is wrong.

    Lenient: the <tool_call> tags are optional (the first JSON object counts), the closing tag may be cut off,
    and "arguments" may be a JSON string (OpenAI style) or be called "parameters".
    """
    tagged = re.search(r"<tool_call>(.*?)(?:</tool_call>|$)", action, re.S)
    body = tagged.group(1) if tagged else action
    start = body.find("{")
    if start < 0:
        raise ToolCallError(
            'No tool call found. Call a tool as <tool_call>{"name": "...", "arguments": {...}}</tool_call>.'
        )
    try:
        call, _ = json.JSONDecoder().raw_decode(body[start:])
    except json.JSONDecodeError as error:
        raise ToolCallError(f"Malformed JSON in the tool call: {error.msg} at character {error.pos}.") from error
    arguments = call.get("arguments", call.get("parameters", {})) if isinstance(call, dict) else None
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as error:
            raise ToolCallError(f"Malformed JSON in the tool call's arguments: {error.msg}.") from error
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not isinstance(arguments, dict):
        raise ToolCallError(f'A tool call needs "name" (a string) and "arguments" (an object); got {json.dumps(call)}.')
    return call["name"], arguments


def argument_error(name: str, arguments: dict) -> str | None:
    """What is wrong with a call of tool `name` with `arguments`, or None when it is well-formed."""
    if name not in TOOLS:
        return f"unknown tool {name!r}; tools: {', '.join(TOOLS)}"
    expected, _ = TOOLS[name]
    well_typed = all(
        _is_number(arguments[arg]) if expected[arg] == "number" else isinstance(arguments[arg], str)
        for arg in expected
        if arg in arguments
    )
    if set(arguments) != set(expected) or not well_typed:
        signature = ", ".join(f'"{arg}": {kind}' for arg, kind in expected.items())
        return f"{name} takes arguments {{{signature}}}; got {json.dumps(arguments)}"
    return None


def calculate(expression: str) -> float:
    """The value of an arithmetic expression of numbers, + - * / and parentheses; ValueError otherwise."""
    try:
        return _evaluate(ast.parse(expression, mode="eval").body)
    except (SyntaxError, ZeroDivisionError, RecursionError) as error:
        raise ValueError(f"cannot calculate {expression!r}: {error}") from error


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and _is_number(node.value) and not isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        return OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand)
    raise ValueError(f"calculate understands numbers, + - * / and parentheses, not {ast.unparse(node)!r}")


def _is_number(value) -> bool:
    """A finite JSON number, or a string holding one (small models quote numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return False
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False
