"""Multi-turn environments. Pure Python: imports nothing from the project but envs, and no torch/ray/vllm.

`make_env(name, seed=..., **options)` is the only name -> class map: one explicit if/elif.
"""

from envs.base import Env, StepResult, Task

__all__ = ["Env", "StepResult", "Task", "available", "make_env"]


def available() -> list[str]:
    return ["corridor", "mdp", "faulty", "faulty/raise", "faulty/crash", "faulty/segfault", "faulty/hang"]


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
    raise ValueError(f"unknown env {name!r}; available: {', '.join(available())}")
