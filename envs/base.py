"""[env] The environment protocol: what the agent loop talks to, and the checks on what crosses to it.

env -> agent loop -> trajectory. An `Env` instance plays one trajectory at a time: `reset(task)` returns the
first observation, `step(action)` returns a `StepResult`. What the system reads from a step is a typed field
(`reward`, `done`, `success`, `role`); `info` holds the env's own extras. The env worker (`envs/worker.py`)
checks every reply with `check_reset` / `check_step` before it crosses the process boundary; the agent loop
reads a step through `resolved`, so envs that still put "success" and "role" in `info` keep working.
"""

import dataclasses
import json
import math
from dataclasses import dataclass, field
from numbers import Real
from typing import Protocol

ROLES = ("user", "tool")  # the chat roles an observation renders in


@dataclass(frozen=True)
class Task:
    """What one env instance is asked to do; `seed` fixes the task's own layout, not the env's luck."""

    task_id: str
    seed: int


@dataclass(frozen=True)
class StepResult:
    """The env's reply to one action."""

    observation: str
    reward: float
    done: bool
    info: dict = field(default_factory=dict)  # the env's own extras, JSON values; the system reads none of them
    success: bool | None = None  # the env's verdict on the task, on the last step; None = not given
    role: str | None = None  # the chat role the observation renders in, one of ROLES; None = "user"


class Env(Protocol):
    """Optional: `tools() -> list[dict]`, the OpenAI-style function schemas of the tools the current task offers
    (read after each reset; `envs/toolkit.py`). The agent loop renders them through the chat template."""

    def tasks(self, split: str) -> list[Task]:
        """Deterministic task list of `split` ("train" or "eval"); the two splits share no task_id."""
        ...

    def reset(self, task: Task) -> str:
        """Start a trajectory on `task`; returns the first observation."""
        ...

    def step(self, action: str) -> StepResult:
        """Apply the policy's action text; an unparseable action is a normal step whose observation says why."""
        ...


def resolved(result: StepResult) -> StepResult:
    """`result` with `success` and `role` filled in: the typed field where the env set it, else info["success"] /
    info["role"] (envs written before the fields existed), else None / "user"."""
    success = result.info.get("success") if result.success is None else result.success
    role = result.info.get("role", "user") if result.role is None else result.role
    return dataclasses.replace(result, success=success, role=role)


def tools_of(env: Env) -> list[dict]:
    """The tool schemas of the env's current task: `env.tools()` where the env has the method, else []."""
    return list(env.tools()) if hasattr(env, "tools") else []


def checked_reset(env: Env, task: Task) -> tuple[str, list[dict]]:
    """env.reset(task) and the task's tool schemas, checked (check_reset): what the env worker replies."""
    observation = env.reset(task)
    tools = tools_of(env)
    check_reset(observation, tools)
    return observation, tools


def checked_step(env: Env, action: str) -> StepResult:
    """env.step(action), checked (check_step), with its reward as a float (a numpy number too): what the env worker
    replies."""
    result = env.step(action)
    check_step(result)
    return dataclasses.replace(result, reward=float(result.reward))


def check_reset(observation: object, tools: list) -> None:
    """Raise ValueError naming the field unless reset gave a str and `tools` is a JSON list of function schemas."""
    if not isinstance(observation, str):
        raise ValueError(f"reset returned observation {_shown(observation)}; observation must be a str")
    for schema in tools:
        function = schema.get("function") if isinstance(schema, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            expected = '{"type": "function", "function": {"name": str, ...}}'
            raise ValueError(f"tools() gave {_shown(schema)}; each tool must be {expected}")
    _check_json(tools, "tools()")


def check_step(result: object) -> None:
    """Raise ValueError naming the field and what was found unless `result` is a well-formed StepResult."""
    if not isinstance(result, StepResult):
        raise ValueError(f"step returned {_shown(result)}; it must return an envs.base.StepResult")
    if not isinstance(result.observation, str):
        raise ValueError(f"step returned observation {_shown(result.observation)}; observation must be a str")
    if isinstance(result.reward, bool) or not isinstance(result.reward, Real) or not math.isfinite(result.reward):
        raise ValueError(f"step returned reward {_shown(result.reward)}; reward must be a finite number")
    if not isinstance(result.done, bool):
        raise ValueError(f"step returned done {_shown(result.done)}; done must be a bool")
    if not isinstance(result.info, dict):
        raise ValueError(f"step returned info {_shown(result.info)}; info must be a dict")
    _check_json(result.info, "step returned info that")
    settled = resolved(result)
    if settled.success is not None and not isinstance(settled.success, bool):
        raise ValueError(f"step returned success {_shown(settled.success)}; success must be a bool or None")
    if settled.role not in ROLES:
        raise ValueError(f"step returned role {_shown(settled.role)}; role must be one of {', '.join(ROLES)}")


def _check_json(value: object, what: str) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} is not JSON-serialisable: {error}") from None


def _shown(value: object) -> str:
    """A found value for an error message: its repr (cut to 80 characters) and its type."""
    text = repr(value)
    return f"{text[:77] + '...' if len(text) > 80 else text} ({type(value).__name__})"
