"""[env] The environment protocol: what the agent loop talks to.

env -> agent loop -> trajectory. An `Env` instance plays one trajectory at a time:
`reset(task)` returns the first observation, `step(action)` returns the env's reply.
"""

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Task:
    """What one env instance is asked to do; `seed` fixes the task's own layout, not the env's luck."""

    task_id: str
    seed: int


@dataclass(frozen=True)
class StepResult:
    observation: str
    reward: float
    done: bool
    info: dict = field(default_factory=dict)


class Env(Protocol):
    def tasks(self, split: str) -> list[Task]:
        """Deterministic task list of `split` ("train" or "eval"); the two splits share no task_id."""
        ...

    def reset(self, task: Task) -> str:
        """Start a trajectory on `task`; returns the first observation."""
        ...

    def step(self, action: str) -> StepResult:
        """Apply the policy's action text; an unparseable action is a normal step whose observation says why."""
        ...
