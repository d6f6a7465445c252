"""[env] ScienceWorld (`scienceworld/<task>`): 30 science-experiment tasks in a JVM, behind the extra of that name.

Needs Java 17. One JVM per process, started on first use (~3 s) and shared by every adapter instance; each
instance drives its own simulator object in it. Splits are the suite's own: train = the task's train
variations, eval = its dev variations. Reward = increase of the suite's score in [0, 1]; a failed task
(the suite's -100) is 0. The suite's list of valid action-object combinations runs to thousands of entries
(30k characters in the kitchen), so observations list its action templates instead ("open OBJ", ...).
"""

import functools

from envs.adapter import (
    Progress,
    check_java_version,
    keep_for_process,
    match_action,
    require,
    require_java,
    with_actions,
)
from envs.base import StepResult, Task

# The suite's 30 task names (scienceworld 1.2.3, constants.ID2TASK), in its order.
TASKS = (
    "boil", "melt", "freeze", "change-the-state-of-matter-of", "use-thermometer",
    "measure-melting-point-known-substance", "measure-melting-point-unknown-substance", "power-component",
    "power-component-renewable-vs-nonrenewable-energy", "test-conductivity",
    "test-conductivity-of-unknown-substances", "find-living-thing", "find-non-living-thing", "find-plant",
    "find-animal", "grow-plant", "grow-fruit", "chemistry-mix", "chemistry-mix-paint-secondary-color",
    "chemistry-mix-paint-tertiary-color", "lifespan-longest-lived", "lifespan-shortest-lived",
    "lifespan-longest-lived-then-shortest-lived", "identify-life-stages-1", "identify-life-stages-2",
    "inclined-plane-determine-angle", "inclined-plane-friction-named-surfaces",
    "inclined-plane-friction-unnamed-surfaces", "mendelian-genetics-known-plant",
    "mendelian-genetics-unknown-plant",
)  # fmt: skip
SIMPLIFICATIONS = (
    "easy",
    "teleportAction",
    "openDoors",
    "openContainers",
    "selfWateringFlowerPots",
    "noElectricalAction",
)


@functools.cache
def _jvm():
    """The process's one ScienceWorld JVM, started on first use."""
    check_java_version("ScienceWorld")
    scienceworld = require("scienceworld", "scienceworld")
    # The suite's env class launches the JVM and shuts it down when collected: the cache keeps it for the
    # process, and every adapter instance creates its own simulator object through its gateway.
    return keep_for_process(scienceworld.ScienceWorldEnv(envStepLimit=10**9))


@functools.cache
def _variations(task: str, split: str) -> tuple[int, ...]:
    server = _new_simulator()
    server.load(task, 0, "", False)
    return tuple(server.getVariationsTrain() if split == "train" else server.getVariationsDev())


def _new_simulator():
    return _jvm()._gateway.jvm.scienceworld.runtime.pythonapi.PythonInterface()


class ScienceWorld:
    def __init__(
        self,
        task: str,
        seed: int = 0,
        max_steps: int = 30,
        num_tasks: int = 512,
        simplifications: str = "easy",
        list_actions: bool = True,
        gold_path: bool = False,
    ):
        """seed is unused: a ScienceWorld variation is deterministic.

        simplifications: the suite's comma-separated list ("easy" = all of teleportAction, openDoors,
        openContainers, selfWateringFlowerPots, noElectricalAction; "" = none). list_actions appends the
        suite's action templates to the first observation; gold_path makes `gold_actions()` available.
        """
        require("scienceworld", "scienceworld")
        require_java("ScienceWorld")
        if task not in TASKS:
            raise ValueError(f"scienceworld: unknown task {task!r}; tasks: {', '.join(TASKS)}")
        unknown = [name for name in simplifications.split(",") if name and name not in SIMPLIFICATIONS]
        if unknown:
            raise ValueError(f"scienceworld: unknown simplifications {unknown}; known: {', '.join(SIMPLIFICATIONS)}")
        self.task, self.max_steps, self.num_tasks = task, max_steps, num_tasks
        self.simplifications, self.list_actions, self.gold_path = simplifications, list_actions, gold_path
        self._server = _new_simulator()
        self._progress = Progress(max_steps)
        self._choices: dict[str, str] = {}  # our answer to an ambiguity question -> the suite's

    def tasks(self, split: str) -> list[Task]:
        if split not in ("train", "eval"):
            raise ValueError(f"scienceworld: split must be 'train' or 'eval', got {split!r}")
        variations = _variations(self.task, split)[: self.num_tasks]
        return [Task(task_id=f"scienceworld/{self.task}-{variation}", seed=variation) for variation in variations]

    def reset(self, task: Task) -> str:
        message = self._server.load(self.task, task.seed, self.simplifications, self.gold_path)
        if message:  # the suite reports a bad variation as a string, not an exception
            raise ValueError(f"scienceworld/{self.task}: task {task.task_id}: {message}")
        self._server.reset()
        observation = self._server.step("look around")
        # Some tasks score the start state (0.08 for find-living-thing); rewards count from 0, so the outcome
        # is still the final score.
        self._progress, self._choices = Progress(self.max_steps), {}
        text = f"{self._server.freeActionTaskDesc()}\n{observation}"
        return with_actions(text, list(self._server.getPossibleActions()), self.list_actions)

    def step(self, action: str) -> StepResult:
        action = match_action(action, [])
        observation = self._server.step(self._choices.get(action.lower(), action))
        observation, self._choices = _ordered_choices(observation)
        score = self._server.getScore()
        reward, out_of_steps = self._progress.advance(score)
        completed = bool(self._server.getCompleted()) or score < 0
        done = completed or out_of_steps
        return StepResult(observation.strip(), reward, done, success=completed and score >= 1.0 if done else None)

    def gold_actions(self) -> list[str]:
        """The suite's solution of the current variation (needs gold_path=True)."""
        if not self.gold_path:
            raise RuntimeError("scienceworld: gold_actions() needs gold_path=True")
        return list(self._server.getGoldActionSequence())


def _ordered_choices(observation: str) -> tuple[str, dict[str, str]]:
    """An ambiguity question with its options sorted, and the map from the answers it offers to the suite's.

    The suite numbers the options of "Ambiguous request: ..." in an order that changes between runs (a Java
    hash order): sorted, the same task and actions give the same trajectory. Answering with the option's text
    works too. Any other observation comes back unchanged, with an empty map.
    """
    head, *lines = observation.rstrip().split("\n")
    options = [line.split(":\t", 1) for line in lines]
    if not head.startswith("Ambiguous request") or not options or any(len(option) != 2 for option in options):
        return observation, {}
    options.sort(key=lambda option: option[1])
    choices = {str(i): number for i, (number, _) in enumerate(options)}
    choices |= {text.lower(): number for number, text in options}
    return "\n".join([head] + [f"{i}: {text}" for i, (_, text) in enumerate(options)]), choices
