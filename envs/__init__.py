"""Multi-turn environments. Pure Python: imports nothing from the project but envs, and no torch/ray/vllm.

`make_env(name, seed=..., **options)` makes an env by name (envs/registry.py): a built-in name from `_builtin`,
one explicit if/elif; a user's `module:Class`; or a short name an installed package registers in the entry-point
group `freelunch.envs`. A third-party suite's games are `<suite>/<game>` and need the pip extra named after the
suite (`pip install 'freelunch[textworld_express]'`). The adapter modules import their suite only when an env is
made.
"""

from collections.abc import Callable
from functools import partial

from envs import reasoning_gym, scienceworld, textarena, textworld, textworld_express
from envs.base import Env, StepResult, Task
from envs.registry import EnvSpecError, entry_points, resolve

__all__ = ["Env", "EnvSpecError", "StepResult", "Task", "available", "make_env", "resolve_env"]

SUITES = {  # suite -> its games: env names are "<suite>/<game>"
    "textworld_express": textworld_express.GAMES,
    "scienceworld": scienceworld.TASKS,
    "textworld": tuple(textworld.GAMES),
    "textarena": textarena.GAMES,
    "reasoning_gym": reasoning_gym.DATASETS,
}
BUILTINS = [
    "corridor",
    "mdp",
    "dataset",
    "faulty",
    "faulty/raise",
    "faulty/crash",
    "faulty/segfault",
    "faulty/hang",
    "tools",
]


def builtin_names() -> list[str]:
    return BUILTINS + [f"{suite}/{game}" for suite, games in SUITES.items() for game in games]


def available() -> list[str]:
    """Every name `make_env` takes besides `module:Class`: the built-ins, then the registered entry points."""
    return builtin_names() + sorted(set(entry_points()) - set(BUILTINS))


def resolve_env(name: str) -> Callable[..., Env]:
    """The factory of env `name`, called as factory(seed=..., **options); EnvSpecError says why a name fails."""
    return resolve(name, _builtin, builtin_names())


def make_env(name: str, seed: int = 0, **options) -> Env:
    return resolve_env(name)(seed=seed, **options)


def _builtin(name: str) -> Callable[..., Env] | None:
    """The factory of a built-in env name, or None; imports only the module of that env."""
    suite, _, game = name.partition("/")
    if name == "corridor":
        from envs.corridor import Corridor

        return Corridor
    elif name == "mdp":
        from envs.mdp import TextMDP

        return TextMDP
    elif name == "dataset":  # tasks from a JSONL or Parquet file, scored by a reward function
        from envs.dataset import Dataset

        return Dataset
    elif suite == "faulty" and game in ("", "raise", "crash", "segfault", "hang"):  # fails on purpose: faulty.py
        from envs.faulty import Faulty

        return partial(Faulty, fault=game) if game else Faulty
    elif name == "tools":
        from envs.tools import Tools

        return Tools
    elif suite == "textworld_express" and game in SUITES[suite]:
        return partial(textworld_express.TextWorldExpress, game)
    elif suite == "scienceworld" and game in SUITES[suite]:
        return partial(scienceworld.ScienceWorld, game)
    elif suite == "textworld" and game in SUITES[suite]:
        return partial(textworld.TextWorld, game)
    elif suite == "textarena" and game in SUITES[suite]:
        return partial(textarena.TextArena, game)
    elif suite == "reasoning_gym" and game in SUITES[suite]:
        return partial(reasoning_gym.ReasoningGym, game)
    return None
