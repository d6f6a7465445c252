"""[env] Faulty: a trivial env that fails on purpose, to check that a cluster survives broken environments.

Play it through env processes (what rollout actors do), never in your own process: `crash` and `segfault`
end the process that steps it and `hang` blocks it forever. Each trajectory counts `length` steps (any action
is one step, reward 1/length each, success at the end); with probability `p` (drawn from the env's seed) the
fault happens at step `at_step` (0-based; -1 = during reset). The env names `faulty/<fault>` set the fault,
e.g. `freelunch eval --policy tiny-random --env faulty/hang env.step_timeout_s=2`: a quarter of the
trajectories end "timeout", the rest succeed, and the report counts the env processes replaced.

    fault="raise"     the env raises RuntimeError               -> finish_reason "error"
    fault="crash"     the process exits (os._exit(3))           -> "error", with the exit code
    fault="segfault"  the process gets SIGSEGV                  -> "error", with the signal
    fault="hang"      the env sleeps forever                    -> "timeout" after env.step_timeout_s
    fault="none"      no fault; `chatter=True` also prints to stdout at every call (must not break anything)

`reply` shapes every step's reply: "typed" (the StepResult fields), "info" (success in info["success"], as envs
written before the typed fields do: must keep working), "nan" or "text" (the reward is NaN or a string: a
malformed reply, which the env worker's check turns into an env error, so the trajectory ends "error").
"""

import math
import os
import random
import signal
import sys
import time

from envs.base import StepResult, Task
from envs.tasks import split_tasks

FAULTS = ("none", "raise", "crash", "segfault", "hang")
REPLIES = ("typed", "info", "nan", "text")


class Faulty:
    def __init__(
        self,
        seed: int = 0,
        fault: str = "none",
        at_step: int = 1,
        p: float = 0.25,
        length: int = 3,
        chatter: bool = False,
        reply: str = "typed",
        max_steps: int = 4,
        num_tasks: int = 64,
    ):
        if fault not in FAULTS:
            raise ValueError(f"faulty: fault must be one of {', '.join(FAULTS)}, got {fault!r}")
        if reply not in REPLIES:
            raise ValueError(f"faulty: reply must be one of {', '.join(REPLIES)}, got {reply!r}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"faulty: p must be in [0, 1], got {p}")
        if length < 1 or at_step < -1:
            raise ValueError(f"faulty: length must be >= 1 and at_step >= -1, got length={length}, at_step={at_step}")
        self.fault, self.at_step, self.p, self.length, self.chatter = fault, at_step, p, length, chatter
        self.reply = reply
        self.max_steps, self.num_tasks = max_steps, num_tasks
        self._luck = random.Random(seed)
        self._steps = 0
        self._faulty = False

    def tasks(self, split: str) -> list[Task]:
        return split_tasks("faulty", split, self.num_tasks)

    def reset(self, task: Task) -> str:
        self._steps = 0
        self._faulty = self.fault != "none" and self._luck.random() < self.p
        self._maybe_fail(-1)
        return f"Task {task.task_id}: say anything {self.length} times. Step 1 of {self.length}."

    def step(self, action: str) -> StepResult:
        self._maybe_fail(self._steps)
        self._steps += 1
        if self._steps == self.length:
            return self._result("All done.", True, success=True)
        if self._steps >= self.max_steps:
            return self._result("Time is up.", True, success=False)
        return self._result(f"Step {self._steps + 1} of {self.length}.", False, success=None)

    def _result(self, text: str, done: bool, success: bool | None) -> StepResult:
        reward = {"nan": math.nan, "text": str(1.0 / self.length)}.get(self.reply, 1.0 / self.length)
        if self.reply == "info":
            return StepResult(text, reward, done, {} if success is None else {"success": success})
        return StepResult(text, reward, done, success=success)

    def _maybe_fail(self, step: int) -> None:
        if self.chatter:
            print(f"faulty: step {step} (this line goes to stdout)")
            os.write(1, b"faulty: raw bytes on fd 1\n")
        if not self._faulty or step != self.at_step:
            return
        if self.fault == "raise":
            raise RuntimeError(f"faulty: injected error at step {step}")
        if self.fault == "crash":
            print(f"faulty: injected crash at step {step}", file=sys.stderr, flush=True)
            os._exit(3)
        if self.fault == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
        if self.fault == "hang":
            while True:
                time.sleep(3600)
