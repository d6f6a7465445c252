"""[env] TextWorldExpress (`textworld_express/<game>`): fast text games in a JVM, behind the extra of that name.

One JVM per process, started on first use and shared by every adapter instance (the rollout actor builds one
instance per trajectory); each instance drives its own game object in it. Splits are the suite's own folds:
train = the `train` seeds, eval = the `dev` seeds. Reward = increase of the suite's score in [0, 1].
"""

import functools
import json

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

GAMES = ("coin", "cookingworld", "twc", "mapreader", "arithmetic", "sorting", "simonsays", "peckingorder")
# Small worlds by default (short gold paths, few valid actions) so a 135M policy can succeed; games not
# listed use the suite's defaults. Override with game_params="numLocations=5,...".
GAME_PARAMS = {
    "coin": "numLocations=3,numDistractorItems=0,includeDoors=0,limitInventorySize=0",
    "cookingworld": "numLocations=1,numIngredients=1,numDistractorItems=0,includeDoors=0,limitInventorySize=0",
    "twc": "numLocations=1,numItemsToPutAway=1,includeDoors=0,limitInventorySize=0",
    "mapreader": "numLocations=3,maxDistanceApart=2,maxDistractorItemsPerLocation=0,includeDoors=0,"
    "limitInventorySize=0",
    "simonsays": "gameLength=3,numDistractors=2,memorization=0",
}
FOLDS = {"train": "train", "eval": "dev"}


@functools.cache
def _jvm():
    """The process's one TextWorldExpress JVM, started on first use (~0.4 s)."""
    check_java_version("TextWorldExpress")
    twx = require("textworld_express", "textworld_express")
    # The suite's env class launches the JVM and shuts it down when collected: the cache keeps it for the
    # process, and every adapter instance creates its own game object through its gateway.
    return keep_for_process(twx.TextWorldExpressEnv(envStepLimit=10**9))


@functools.cache
def _fold_seeds(game: str, game_params: str, fold: str) -> tuple[int, ...]:
    """The suite's seeds of `fold` (train 0-999, dev 10000-10999, test 20000-20999 in 1.1.0)."""
    server = _new_game(game, game_params)
    return tuple(server.getSeedsTrain() if fold == "train" else server.getSeedsDev())


def _new_game(game: str, game_params: str):
    server = _jvm()._gateway.jvm.textworldexpress.runtime.PythonInterface()
    message = server.load(game, game_params)
    if message:
        raise ValueError(f"textworld_express/{game}: bad game_params {game_params!r}: {message}")
    return server


class TextWorldExpress:
    def __init__(
        self,
        game: str,
        seed: int = 0,
        max_steps: int = 20,
        num_tasks: int = 512,
        game_params: str | None = None,
        list_actions: bool = True,
        gold_path: bool = False,
    ):
        """seed is unused: a TextWorldExpress game is deterministic given its task seed.

        list_actions appends the suite's valid actions to every observation; gold_path makes `gold_actions()`
        available (the suite's solution, for tests and warm starts).
        """
        require("textworld_express", "textworld_express")
        require_java("TextWorldExpress")
        if game not in GAMES:
            raise ValueError(f"textworld_express: unknown game {game!r}; games: {', '.join(GAMES)}")
        self.game, self.max_steps, self.num_tasks = game, max_steps, num_tasks
        self.game_params = GAME_PARAMS.get(game, "") if game_params is None else game_params
        self.list_actions, self.gold_path = list_actions, gold_path
        self._server = _new_game(game, self.game_params)
        self._progress = Progress(max_steps)
        self._valid: list[str] = []

    def tasks(self, split: str) -> list[Task]:
        if split not in FOLDS:
            raise ValueError(f"textworld_express: split must be 'train' or 'eval', got {split!r}")
        seeds = _fold_seeds(self.game, self.game_params, FOLDS[split])[: self.num_tasks]
        return [Task(task_id=f"textworld_express/{self.game}-{seed}", seed=seed) for seed in seeds]

    def reset(self, task: Task) -> str:
        fold = "dev" if task.seed in _fold_seeds(self.game, self.game_params, "dev") else "train"
        state = json.loads(self._server.generateNewGameJSON(task.seed, fold, self.gold_path))
        if state["observation"].startswith("ERROR"):  # e.g. game_params the suite accepted but cannot build
            message = state["observation"]
            raise ValueError(f"textworld_express/{self.game} ({self.game_params}): task {task.task_id}: {message}")
        self._progress = Progress(self.max_steps)
        self._valid = sorted(state["validActions"])
        task_text = self._server.getTaskDescription()
        return with_actions(f"{task_text}\n{state['observation']}", self._valid, self.list_actions)

    def step(self, action: str) -> StepResult:
        state = json.loads(self._server.stepJSON(match_action(action, self._valid)))
        self._valid = sorted(state["validActions"])
        reward, out_of_steps = self._progress.advance(state["score"])
        done = state["tasksuccess"] or state["taskfailure"] or out_of_steps
        text = with_actions(state["observation"], self._valid, self.list_actions and not done)
        return StepResult(text, reward, done, success=bool(state["tasksuccess"]) if done else None)

    def gold_actions(self) -> list[str]:
        """The suite's solution of the current task (needs gold_path=True)."""
        if not self.gold_path:
            raise RuntimeError("textworld_express: gold_actions() needs gold_path=True")
        return list(self._server.getGoldActionSequence())
