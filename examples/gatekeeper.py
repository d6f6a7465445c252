"""Your own multi-turn env, outside freelunch: a guard at each gate tells his password; say it to pass.

    freelunch train examples/gatekeeper.toml          (from the repository root)
    freelunch env check examples.gatekeeper:Gatekeeper

The class follows the env protocol (envs/base.py): tasks(split), reset(task), step(action). freelunch builds it
as Gatekeeper(seed=..., max_steps=..., num_tasks=..., **env.options) in every env process of every rollout actor.
A guard at each gate tells his password and asks for it. An answer counts when it names that password and no
other gate's, so a policy that recites every password it has heard is sent back, and one that repeats what it is
told passes. An untrained 135M model passes a gate now and then; RL makes it answer as asked.
"""

import random
import re
import zlib

from envs import StepResult, Task

WORDS = ("river", "stone", "maple", "copper", "falcon", "lantern", "meadow", "harbor", "cedar", "ember", "violet")


class Gatekeeper:
    def __init__(self, seed: int = 0, max_steps: int = 4, num_tasks: int = 512, num_gates: int = 2):
        if num_gates < 1 or max_steps < num_gates:
            raise ValueError(f"gatekeeper: need 1 <= num_gates <= max_steps, got {num_gates} and {max_steps}")
        self.max_steps, self.num_tasks, self.num_gates = max_steps, num_tasks, num_gates
        self._passwords: list[str] = []
        self._gate = self._steps = 0

    def tasks(self, split: str) -> list[Task]:
        """The first num_tasks ids of the split; one id in five (by a hash of the id) is an eval task."""
        ids = (f"gate-{i}" for i in range(10 * self.num_tasks))
        chosen = [i for i in ids if (zlib.crc32(i.encode()) % 5 == 0) == (split == "eval")][: self.num_tasks]
        return [Task(task_id=i, seed=int(i.removeprefix("gate-"))) for i in chosen]

    def reset(self, task: Task) -> str:
        self._passwords = random.Random(task.seed).sample(WORDS, self.num_gates)
        self._gate = self._steps = 0
        return f"You must pass {self.num_gates} gates. {self._ask()}"

    def step(self, action: str) -> StepResult:
        self._steps += 1
        named = set(re.findall(r"\b(" + "|".join(WORDS) + r")\b", action.lower()))
        if named & set(self._passwords) == {self._passwords[self._gate]}:
            self._gate += 1
            if self._gate == self.num_gates:
                return StepResult("The last gate opens. You are through!", 1 / self.num_gates, True, success=True)
            text, reward = f"The gate opens. {self._ask()}", 1 / self.num_gates
        else:
            text, reward = f"The guard shakes his head. {self._ask()}", 0.0
        if self._steps >= self.max_steps:
            return StepResult("The guard sends you away.", reward, True, success=False)
        return StepResult(text, reward, False)

    def _ask(self) -> str:
        return f"Gate {self._gate + 1}: the guard says the password is {self._passwords[self._gate]}. Say the password."
