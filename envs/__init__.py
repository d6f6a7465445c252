"""Multi-turn environments. Pure Python: imports nothing from the project but envs, and no torch/ray/vllm.

`make_env(name, seed=..., **options)` is the only name -> class map: one explicit if/elif.
"""

from envs.base import Env, StepResult, Task

__all__ = ["Env", "StepResult", "Task", "available", "make_env"]


def available() -> list[str]:
    return ["corridor", "mdp", "faulty"]


def make_env(name: str, seed: int = 0, **options) -> Env:
    if name == "corridor":
        from envs.corridor import Corridor

        return Corridor(seed=seed, **options)
    elif name == "mdp":
        from envs.mdp import TextMDP

        return TextMDP(seed=seed, **options)
    elif name == "faulty":
        from envs.faulty import Faulty

        return Faulty(seed=seed, **options)
    raise ValueError(f"unknown env {name!r}; available: {', '.join(available())}")
