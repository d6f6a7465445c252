"""[env] `freelunch env check NAME`: an env against the protocol's contract, before a run spends hours on it.

    name + options -> [check_env] -> one line per check; EnvCheckFailed names the first violation

What Gymnasium's `check_env` is to a Gymnasium env. The checks run in order and stop at the first violation:
1. `make`: the env is built as a run builds it, `make_env(name, seed=..., max_steps=..., num_tasks=..., **options)`.
2. `tasks`: each split is a list of envs.Task (a str id, an int seed) with unique ids; a second call and a second
   instance made with another seed give the same lists; train is not empty; the splits share no id.
3. `play`: episodes on train and eval tasks, played in an env process as a rollout actor plays them (the user's
   module imported in a fresh interpreter, replies as JSON, the run's timeouts), with actions drawn by a seeded
   random policy from what any LLM may send: an action the observation lists, a word of it, random text, random
   bytes, nothing.
   Every reply passes the env worker's own checks (`envs.base.check_reset` / `check_step`: an observation is a
   str, a reward a finite number, `done` a bool, `success` a bool when given, ...), and every episode ends
   (`done`) within max_steps.
4. `replay`: the same tasks and actions, in the same order, in a fresh env process with the same seed give the
   same observations, rewards, done flags and infos: a run that resumes, or a trajectory that is re-played after
   a failure, meets the same env.
5. `latency`: the median and the slowest reset and step of `play`, so a slow env is seen before it is a slow run.
"""

import asyncio
import random
import string
import time
from dataclasses import dataclass

from envs import make_env
from envs.adapter import listed_actions
from envs.base import StepResult, Task
from envs.process import EnvFailure, EnvProcess
from envs.registry import EnvSpecError
from envs.tasks import SPLITS


class EnvCheckFailed(Exception):
    """A violation of the env contract: `check` is the check's name, the message what was found and expected."""

    def __init__(self, check: str, message: str):
        super().__init__(f"{check}: {message}")
        self.check = check


@dataclass(frozen=True)
class Episode:
    """What one episode saw: the task, the actions sent, the first observation and each step's reply."""

    task: Task
    actions: tuple[str, ...]
    first: str
    steps: tuple[StepResult, ...]
    reset_s: float
    step_s: tuple[float, ...]


def check_env(
    name: str,
    *,
    seed: int = 0,
    max_steps: int = 4,
    num_tasks: int = 512,
    options: dict | None = None,
    episodes: int = 8,
    step_timeout_s: float = 30.0,
    reset_timeout_s: float = 120.0,
    report=print,
) -> None:
    """Run every check on env `name`, `report`ing one line per check passed; raises EnvCheckFailed at the first
    violation. `episodes` are split between the train and the eval tasks."""
    kwargs = {"max_steps": max_steps, "num_tasks": num_tasks, **(options or {})}
    try:
        env = make_env(name, seed=seed, **kwargs)
    except EnvSpecError as error:  # the name does not resolve: the message says why
        raise EnvCheckFailed("make", str(error)) from error
    except Exception as error:
        raise EnvCheckFailed("make", f"{name} does not build: {type(error).__name__}: {error}") from error
    report(f"ok  make: {type(env).__module__}.{type(env).__qualname__}")
    splits = check_tasks(env, make_env(name, seed=seed + 1, **kwargs))
    report(f"ok  tasks: {len(splits['train'])} train, {len(splits['eval'])} eval; deterministic, ids unique, disjoint")
    picked = pick_tasks(splits, episodes)
    spec = (name, seed, kwargs)
    played = asyncio.run(play(spec, picked, max_steps, step_timeout_s, reset_timeout_s, policy_seed=seed))
    for episode in played:
        check_episode(episode, max_steps)
    steps = sum(len(episode.steps) for episode in played)
    report(f"ok  play: {len(played)} episodes, {steps} steps; types right, rewards finite, each done by max_steps")
    again = asyncio.run(replay(spec, played, step_timeout_s, reset_timeout_s))
    for episode, replayed in zip(played, again):
        check_replay(episode, replayed)
    report(f"ok  replay: the same {len(played)} episodes again in a fresh process, identical")
    resets = [episode.reset_s for episode in played]
    step_times = [s for episode in played for s in episode.step_s]
    report(
        f"ok  latency: reset median {_ms(resets, 0.5)} (max {_ms(resets, 1.0)}), "
        f"step median {_ms(step_times, 0.5)} (max {_ms(step_times, 1.0)})"
    )


def check_tasks(env, other) -> dict[str, list[Task]]:
    """Each split's tasks, checked: a list of Task with str ids and int seeds, ids unique, equal on a second call
    and from `other` (an instance made with another seed), train not empty, splits disjoint."""
    splits = {}
    for split in SPLITS:
        try:
            tasks = env.tasks(split)
        except Exception as error:
            raise EnvCheckFailed("tasks", f"tasks({split!r}) raised {type(error).__name__}: {error}") from error
        if not isinstance(tasks, list):
            raise EnvCheckFailed(
                "tasks", f"tasks({split!r}) must return a list of envs.Task, got {type(tasks).__name__}"
            )
        for task in tasks:
            if not isinstance(task, Task) or not isinstance(task.task_id, str) or type(task.seed) is not int:
                raise EnvCheckFailed(
                    "tasks", f"tasks({split!r}) holds {task!r}; expected envs.Task(task_id: str, seed: int)"
                )
        ids = [task.task_id for task in tasks]
        if len(set(ids)) != len(ids):
            duplicate = next(task_id for task_id in ids if ids.count(task_id) > 1)
            raise EnvCheckFailed("tasks", f"tasks({split!r}) holds task id {duplicate!r} more than once")
        for again, source in (
            (env.tasks(split), "a second call"),
            (other.tasks(split), "an instance with another seed"),
        ):
            if again != tasks:
                raise EnvCheckFailed("tasks", f"tasks({split!r}) is not deterministic: {source} gives another list")
        splits[split] = tasks
    if not splits["train"]:
        raise EnvCheckFailed("tasks", "tasks('train') is empty: a run has nothing to train on")
    shared = sorted({t.task_id for t in splits["train"]} & {t.task_id for t in splits["eval"]})
    if shared:
        raise EnvCheckFailed("tasks", f"train and eval share {len(shared)} task ids, e.g. {shared[0]!r}")
    return splits


def pick_tasks(splits: dict[str, list[Task]], episodes: int) -> list[Task]:
    """`episodes` tasks: the first ones of eval (a quarter, at least one when it has any), the rest from train."""
    from_eval = min(len(splits["eval"]), max(1, episodes // 4) if episodes > 1 else 0)
    train = splits["train"]
    return [train[i % len(train)] for i in range(episodes - from_eval)] + splits["eval"][:from_eval]


def random_action(observation: str, rng: random.Random) -> str:
    """What an LLM might send: an action the observation lists, one of its words, random text, random bytes as the
    detokenizer decodes them (control characters, U+FFFD), or nothing."""
    kind = rng.randrange(5)
    listed = listed_actions(observation)
    if kind == 0 and listed:
        return rng.choice(listed)
    words = observation.split()
    if kind <= 1 and words:
        return rng.choice(words)
    if kind == 2:
        return "".join(rng.choice(string.printable) for _ in range(rng.randint(1, 40)))
    if kind == 3:
        return rng.randbytes(rng.randint(1, 40)).decode("utf-8", "replace")
    return ""


async def play(spec, tasks, max_steps, step_timeout_s, reset_timeout_s, policy_seed) -> list[Episode]:
    """Play `tasks` in order, in one env process, with a seeded random policy; at most max_steps + 1 steps each
    (one more than the contract allows, so an env that does not end is seen)."""
    rng = random.Random(policy_seed)

    def choose(observation: str, t: int) -> str | None:
        return random_action(observation, rng) if t <= max_steps else None

    return await _episodes(spec, tasks, choose, step_timeout_s, reset_timeout_s, "play")


async def replay(spec, played: list[Episode], step_timeout_s, reset_timeout_s) -> list[Episode]:
    """The episodes of `play` again, in a fresh env process with the same seed and the same actions."""
    scripts = iter([list(episode.actions) for episode in played])
    script: list[str] = []

    def choose(observation: str, t: int) -> str | None:
        nonlocal script
        if t == 0:
            script = next(scripts)
        return script[t] if t < len(script) else None

    return await _episodes(spec, [e.task for e in played], choose, step_timeout_s, reset_timeout_s, "replay")


async def _episodes(spec, tasks, choose, step_timeout_s, reset_timeout_s, check: str) -> list[Episode]:
    """Each task played in one env process made from spec = (name, seed, kwargs): `choose(observation, t)` gives
    step t's action, None to stop. A failing env call is a violation of `check`."""
    name, seed, kwargs = spec
    process = await EnvProcess.start(step_timeout_s=step_timeout_s, reset_timeout_s=reset_timeout_s)
    episodes = []
    try:
        process.make(name, seed, kwargs)
        for task in tasks:
            actions, steps, step_s = [], [], []
            where = f"reset of {task.task_id}"
            try:
                start = time.perf_counter()
                first = observation = await process.reset(task)
                reset_s = time.perf_counter() - start
                while (action := choose(observation, len(actions))) is not None:
                    where = f"step {len(actions)} of {task.task_id} (action {action!r})"
                    start = time.perf_counter()
                    result = await process.step(action)
                    step_s.append(time.perf_counter() - start)
                    actions.append(action)
                    steps.append(result)
                    if result.done:
                        break
                    observation = result.observation
            except EnvFailure as error:
                raise EnvCheckFailed(check, f"{where} failed: {error}") from error
            episodes.append(Episode(task, tuple(actions), first, tuple(steps), reset_s, tuple(step_s)))
    finally:
        await process.close()
    return episodes


def check_episode(episode: Episode, max_steps: int) -> None:
    """One played episode ended within max_steps (the types of each reply are the env worker's checks)."""
    if not (episode.steps and episode.steps[-1].done) or len(episode.steps) > max_steps:
        raise EnvCheckFailed(
            "play", f"{episode.task.task_id} did not end within max_steps={max_steps}: {len(episode.steps)} steps taken"
        )


def check_replay(episode: Episode, replayed: Episode) -> None:
    """The replayed episode equals the played one, step by step; the first difference is the violation."""
    where = f"{episode.task.task_id} replayed with the same seed and actions"
    if replayed.first != episode.first:
        raise EnvCheckFailed(
            "replay", f"{where}: the first observation differs: {_diff(episode.first, replayed.first)}"
        )
    for t, (a, b) in enumerate(zip(episode.steps, replayed.steps)):
        for field in ("observation", "reward", "done", "info"):
            x, y = getattr(a, field), getattr(b, field)
            if x != y:
                shown = _diff(x, y) if field == "observation" else f"{x!r} then {y!r}"
                raise EnvCheckFailed("replay", f"{where}: step {t}'s {field} differs: {shown}")
    if len(replayed.steps) != len(episode.steps):
        raise EnvCheckFailed("replay", f"{where}: {len(episode.steps)} steps then {len(replayed.steps)}")


def _diff(a: str, b: str) -> str:
    at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"from character {at}, {a[at : at + 40]!r} then {b[at : at + 40]!r}"


def _ms(values: list[float], quantile: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{1000 * ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]:.1f} ms"
