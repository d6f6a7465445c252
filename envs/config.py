"""EnvConfig: which environment the rollout actors play."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class EnvConfig:
    name: str = "corridor"
    """Environment name, resolved by envs.make_env (see envs.available())."""
    num_tasks: int = 512
    """Tasks in the train split; iterations cycle through them in a seeded order."""
    max_steps: int = 4
    """Steps per trajectory before the env ends it (reward 0): the agent's budget."""
    step_timeout_s: float = 30.0
    """Seconds one env step may take; past it the env process is killed, the trajectory ends "timeout"
    and a fresh process replaces it."""
    reset_timeout_s: float = 120.0
    """Seconds building and resetting the env for a trajectory may take (real suites start a JVM or
    generate a game there), with the same consequence as step_timeout_s."""
    max_env_processes: int = 64
    """Env processes per rollout actor (one per trajectory in play); more trajectories wait for a free one.
    Each real suite's process holds a JVM or a game interpreter, so this bounds an actor's memory."""
    options: dict[str, str | int | float | bool] = field(default_factory=dict)
    """Options of the env beyond these fields, passed to its constructor: e.g. `[env.options]` with
    `game_params = "numLocations=3"` for a TextWorldExpress game (envs/README.md lists each env's)."""

    def make_env_kwargs(self) -> dict:
        """Keyword arguments of envs.make_env for this config (besides name and seed)."""
        return {"max_steps": self.max_steps, "num_tasks": self.num_tasks, **self.options}
