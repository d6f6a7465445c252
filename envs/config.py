"""EnvConfig: which environment the rollout actors play."""

from dataclasses import dataclass


@dataclass(frozen=True)
class EnvConfig:
    name: str = "corridor"
    """Environment name, resolved by envs.make_env (see envs.available())."""
    num_tasks: int = 512
    """Tasks in the train split; iterations cycle through them in a seeded order."""
    max_steps: int = 4
    """Steps per trajectory before the env ends it (reward 0): the agent's budget."""
