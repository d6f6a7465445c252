"""Multi-turn environments. Pure Python: imports nothing from the project but envs, and no torch/ray/vllm.

`make_env(name, seed=..., **options)` is the only name -> class map: one explicit if/elif. Built-in envs have
plain names; a third-party suite's games are `<suite>/<game>` and need the pip extra named after the suite
(`pip install 'freelunch[textworld_express]'`). The adapter modules import their suite only when an env is made.
"""

from envs import scienceworld, textarena, textworld, textworld_express
from envs.base import Env, StepResult, Task

__all__ = ["Env", "StepResult", "Task", "available", "make_env"]

SUITES = {  # suite -> its games: env names are "<suite>/<game>"
    "textworld_express": textworld_express.GAMES,
    "scienceworld": scienceworld.TASKS,
    "textworld": tuple(textworld.GAMES),
    "textarena": textarena.GAMES,
}


def available() -> list[str]:
    return ["corridor", "mdp", "faulty", "faulty/raise", "faulty/crash", "faulty/segfault", "faulty/hang", "tools"] + [
        f"{suite}/{game}" for suite, games in SUITES.items() for game in games
    ]


def make_env(name: str, seed: int = 0, **options) -> Env:
    suite, _, game = name.partition("/")
    if name == "corridor":
        from envs.corridor import Corridor

        return Corridor(seed=seed, **options)
    elif name == "mdp":
        from envs.mdp import TextMDP

        return TextMDP(seed=seed, **options)
    elif suite == "faulty":  # "faulty/<fault>" fails on purpose, see envs/faulty.py
        from envs.faulty import Faulty

        return Faulty(seed=seed, **({"fault": game} if game else {}) | options)
    elif name == "tools":
        from envs.tools import Tools

        return Tools(seed=seed, **options)
    elif suite == "textworld_express" and game in SUITES[suite]:
        return textworld_express.TextWorldExpress(game, seed=seed, **options)
    elif suite == "scienceworld" and game in SUITES[suite]:
        return scienceworld.ScienceWorld(game, seed=seed, **options)
    elif suite == "textworld" and game in SUITES[suite]:
        return textworld.TextWorld(game, seed=seed, **options)
    elif suite == "textarena" and game in SUITES[suite]:
        return textarena.TextArena(game, seed=seed, **options)
    raise ValueError(f"unknown env {name!r}; available: {', '.join(available())}")
