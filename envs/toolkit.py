"""[env] Tools in the ecosystem's format: declare Python functions (or OpenAI-style schemas), get a tool-calling env.

A user writes tools, the task's first observation and a reward/submit rule; `ToolEnv` does the rest:

    tool(function) -> Tool(schema, function)   the schema from the signature, type hints and docstring
                                               (transformers.utils.get_json_schema), or given OpenAI style:
                                               {"type": "function", "function": {"name", "description", "parameters"}}
    ToolEnv.tools() -> [schema, ...]           -> worker reset reply -> EnvProcess.tools -> agent loop
                                               -> Conversation(tools=...) -> apply_chat_template(tools=...)
    action text -> parse (parse_hermes) -> [ToolCall, ...] -> the first call only
                -> check_arguments against its schema -> call_with_timeout -> observation with role "tool"

`parse_hermes` reads the Hermes format that SmolLM2's and Qwen2.5's ChatML templates use; a template family
with another call format is another parse function given to `ToolEnv(parse=...)`. Only the first call of an
action runs: a step is one call and its result, so each step's reward belongs to one call; the observation
says how many further calls were ignored. Text with no parseable call is a user-role observation saying what
is wrong; every call, even a failing one, gets a tool-role observation: an unknown tool, arguments that do
not fit the schema ("get_price takes arguments {...}"), a tool that raised ("get_price raised ValueError: ...")
or did not answer within `call_timeout_s` ("get_price did not answer within 2 s").

Limits of the timeout: a call runs in a daemon thread and a Python thread cannot be killed, so a hung call is
abandoned, not stopped: it keeps its thread (and whatever it holds, and may still change the env's state when it
wakes), while the env takes its next step. A call that blocks the whole interpreter (C code holding the GIL) is
bounded only by the env process's own step timeout (`env.step_timeout_s`), which stays the hard bound.
"""

import json
import math
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from envs.base import StepResult, Task

JSON_TYPES = {  # JSON schema type -> Python check of an (already coerced) value
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


@dataclass(frozen=True)
class Tool:
    """One tool: its OpenAI-style function schema and the Python callable run with a call's arguments."""

    schema: dict
    function: Callable[..., object]

    @property
    def name(self) -> str:
        return self.schema["function"]["name"]

    @property
    def parameters(self) -> dict:
        return self.schema["function"].get("parameters") or {"type": "object", "properties": {}}


@dataclass(frozen=True)
class ToolCall:
    """One call parsed from an action: the tool's name and the arguments as the policy wrote them."""

    name: str
    arguments: dict


@dataclass(frozen=True)
class ToolResult:
    """What a tool may return instead of a plain result: the result plus the step's reward, and for a submit
    rule the end of the trajectory with the env's verdict. A plain return value is ToolResult(value)."""

    content: object  # a str is the observation as is; any other JSON value is rendered with json.dumps
    reward: float = 0.0
    done: bool = False
    success: bool | None = None


class ToolCallError(ValueError):
    """The action holds no well-formed tool call; the message says what is wrong."""


class ToolTimeout(Exception):
    """A tool call did not answer within its time and was abandoned."""


def tool(function: Callable[..., object], schema: dict | None = None) -> Tool:
    """A Tool running `function`. Its schema is `schema` (OpenAI style) or, without one, made from the function's
    signature, type hints and Google-style docstring ("Args:" describing every argument) by
    transformers.utils.get_json_schema: the schema apply_chat_template(tools=[function]) renders."""
    if schema is None:
        # Imported here: ~2 s of import that only envs declaring Python functions pay, once per env process.
        from transformers.utils import get_json_schema

        schema = get_json_schema(function)
    function_schema = schema.get("function") if isinstance(schema, dict) else None
    if not isinstance(function_schema, dict) or schema.get("type") != "function":
        raise ValueError(f'a tool schema is {{"type": "function", "function": {{...}}}}, got {schema!r}')
    if not isinstance(function_schema.get("name"), str) or not function_schema["name"]:
        raise ValueError(f"a tool schema needs function.name, a non-empty string; got {function_schema!r}")
    parameters = function_schema.get("parameters", {})
    if not isinstance(parameters, dict) or not isinstance(parameters.get("properties", {}), dict):
        raise ValueError(f"tool {function_schema['name']}: parameters must be a JSON schema object, got {parameters!r}")
    return Tool(schema, function)


def parse_hermes(action: str) -> list[ToolCall]:
    """Every tool call of the action text in the Hermes format, in order; raises ToolCallError saying what is wrong.

    `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, leniently: a closing tag may be cut off (the call
    then runs to the next <tool_call> or the end), "arguments" may be a JSON string (OpenAI style) or be called
    "parameters", and without any tag the first JSON object of the text is the one call. Any malformed call
    (a later one too) raises: a policy that writes one clean call per turn is never wrong.
    """
    bodies = re.findall(r"<tool_call>(.*?)(?:</tool_call>|(?=<tool_call>)|$)", action, re.S) or [action]
    return [_parse_call(body) for body in bodies]


def _parse_call(body: str) -> ToolCall:
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
    return ToolCall(call["name"], arguments)


def check_arguments(tool: Tool, arguments: dict) -> dict:
    """The call's arguments, checked against the tool's parameters schema: every required key, no unknown key, and
    each top-level value of its type (or enum); nested values are not checked. A number or integer may come as a
    string holding one (small models quote numbers), an integer as 2.0, and is converted. Raises ValueError saying
    what was expected."""
    properties, required = tool.parameters.get("properties", {}), tool.parameters.get("required", [])
    missing = [key for key in required if key not in arguments]
    unknown = [key for key in arguments if key not in properties]
    checked = {key: _coerced(properties[key], value) for key, value in arguments.items() if key in properties}
    wrong = [key for key, value in checked.items() if not _fits(properties[key], value)]
    if missing or unknown or wrong:
        problems = [f"missing {key!r}" for key in missing] + [f"unexpected {key!r}" for key in unknown]
        problems += [f"{key!r} must be {_type_text(properties[key])}" for key in wrong]
        signature = ", ".join(
            f'"{key}": {_type_text(spec)}' + ("" if key in required else " (optional)")
            for key, spec in properties.items()
        )
        raise ValueError(
            f"{tool.name} takes arguments {{{signature}}}; got {json.dumps(arguments)} ({', '.join(problems)})"
        )
    return checked


def _coerced(spec: dict, value: object) -> object:
    """A number where the schema asks for one and the value holds it (a quoted number, 2.0 for an integer)."""
    kinds = _kinds(spec)
    if isinstance(value, str) and "string" not in kinds:
        try:
            value = float(value) if "number" in kinds or "integer" in kinds else value
        except ValueError:
            return value
    if isinstance(value, float) and "integer" in kinds and value.is_integer():
        return int(value)
    return value


def _fits(spec: dict, value: object) -> bool:
    if "enum" in spec and value not in spec["enum"]:
        return False
    kinds = _kinds(spec)
    return not kinds or any(JSON_TYPES[kind](value) for kind in kinds if kind in JSON_TYPES)


def _kinds(spec: dict) -> list[str]:
    kinds = spec.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    return kinds + ["null"] if spec.get("nullable") else kinds


def _type_text(spec: dict) -> str:
    if "enum" in spec:
        return " | ".join(json.dumps(value) for value in spec["enum"])
    return " | ".join(_kinds(spec)) or "any"


def call_with_timeout(function: Callable[..., object], arguments: dict, timeout_s: float) -> object:
    """function(**arguments) in a daemon thread; re-raises what it raised, ToolTimeout past timeout_s.

    A call past its time is abandoned, not stopped (a Python thread cannot be killed): see the module doc.
    """
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = function(**arguments)
        except BaseException as error:  # reported to the caller, whatever it is
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise ToolTimeout(f"did not answer within {timeout_s:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class ToolEnv(ABC):
    """A tool-calling env. A subclass passes its tools to __init__ and writes `tasks(split)`, `start(task)` and, in
    its tools, the reward and submit rule: a tool returns a ToolResult with a reward, or with done=True and success
    to end the trajectory. The tools are the same for every task; `tools()` gives their schemas to the agent loop.
    `max_steps` ends a trajectory with success False ("Time is up."). Example: envs/README.md, "Tools".
    """

    def __init__(
        self,
        tools: list[Tool],
        *,
        max_steps: int = 8,
        call_timeout_s: float = 10.0,
        parse: Callable[[str], list[ToolCall]] = parse_hermes,
    ):
        names = [t.name for t in tools]
        if not tools or len(set(names)) != len(names):
            raise ValueError(f"a ToolEnv needs at least one tool and distinct tool names, got {names}")
        if max_steps < 1 or not call_timeout_s > 0:
            raise ValueError(f"need max_steps >= 1 and call_timeout_s > 0, got {max_steps}, {call_timeout_s}")
        self._tools = {t.name: t for t in tools}
        self.max_steps, self.call_timeout_s, self.parse = max_steps, call_timeout_s, parse
        self._steps = 0

    @abstractmethod
    def tasks(self, split: str) -> list[Task]:
        """Deterministic task list of `split` ("train" or "eval"); the two splits share no task_id."""

    @abstractmethod
    def start(self, task: Task) -> str:
        """Set up `task` (the state the tools read); returns the first observation."""

    def tools(self) -> list[dict]:
        return [t.schema for t in self._tools.values()]

    def reset(self, task: Task) -> str:
        self._steps = 0
        return self.start(task)

    def step(self, action: str) -> StepResult:
        self._steps += 1
        try:
            calls = self.parse(action)
        except ToolCallError as error:
            return self._next(str(error), 0.0, role="user")  # no call was made: the env answers as the user
        result = self._call(calls[0])
        text = result.content if isinstance(result.content, str) else json.dumps(result.content)
        if len(calls) > 1:
            text += f"\n(Only the first tool call of a turn runs; {len(calls) - 1} more ignored.)"
        if result.done:
            return StepResult(text, result.reward, True, success=result.success, role="tool")
        return self._next(text, result.reward, role="tool")

    def _call(self, call: ToolCall) -> ToolResult:
        """One call: an error result for an unknown tool, bad arguments, a raise or a timeout; else the tool's."""
        if call.name not in self._tools:
            return ToolResult({"error": f"unknown tool {call.name!r}; tools: {', '.join(self._tools)}"})
        tool = self._tools[call.name]
        try:
            arguments = check_arguments(tool, call.arguments)
        except ValueError as error:
            return ToolResult({"error": str(error)})
        try:
            value = call_with_timeout(tool.function, arguments, self.call_timeout_s)
        except ToolTimeout as error:
            return ToolResult({"error": f"{call.name} {error}"})
        except Exception as error:
            return ToolResult({"error": f"{call.name} raised {type(error).__name__}: {error}"})
        return value if isinstance(value, ToolResult) else ToolResult(value)

    def _next(self, text: str, reward: float, role: str) -> StepResult:
        if self._steps >= self.max_steps:
            return StepResult(text + "\nTime is up.", reward, True, success=False, role=role)
        return StepResult(text, reward, False, role=role)
