"""`freelunch eval`: play a policy on the tasks of an env's split and report its success rate.

    freelunch eval --policy DIR --env NAME [--split eval] [--num-tasks N] [--group-size K] [--out DIR]
                   [seed=S env.KEY=VALUE actors.KEY=VALUE ...]

One rollout actor in this process (no Ray) plays every trajectory: the vLLM engine, the agent loop and the env
processes of training, with the same settings (`env.*`, `actors.*`, as for `train`). --out receives
trajectories.parquet (the rollout schema of training) and summary.json, each written atomically.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from actors.trajectory import concat, from_ipc, write_parquet
from cluster.config import Config, ConfigError, load
from cluster.files import write_atomically
from cluster.models import resolve_model
from envs import Task, make_env
from envs.tasks import SPLITS

if TYPE_CHECKING:
    from actors.rollout import Work  # imports torch: the command's --help and bad input stay fast without it

Z95 = statistics.NormalDist().inv_cdf(0.975)  # 1.95996...


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", required=True, help="a run's policy/ dir, an HF model dir or a model name")
    parser.add_argument("--env", required=True, help="environment name (one of envs.available())")
    parser.add_argument("--split", default="eval", choices=SPLITS, help="task split to play (default eval)")
    parser.add_argument("--num-tasks", type=int, help="play the first N tasks of the split (default: all of them)")
    parser.add_argument("--group-size", type=int, default=1, help="trajectories per task (default 1)")
    parser.add_argument("--out", help="output directory (default evals/<YYYYmmdd-HHMMSS>)")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="seed, env.* and actors.* settings, e.g. env.max_steps=6"
    )


def run_eval(args: argparse.Namespace) -> int:
    """The command. Bad input exits with 2 and one line naming the cause, before the engine starts."""
    try:
        cfg, work = plan(args)
        model_dir = str(resolve_model(args.policy))
    except (ConfigError, ValueError, FileNotFoundError) as error:
        print(f"freelunch: {error}", file=sys.stderr)
        return 2
    for key, value in {"VLLM_LOGGING_LEVEL": "WARNING", "TRANSFORMERS_VERBOSITY": "error"}.items():
        os.environ.setdefault(key, value)  # keep the report readable; a user's own levels win
    out = Path(args.out or Path("evals") / time.strftime("%Y%m%d-%H%M%S"))
    start = time.monotonic()
    table, env_restarts = asyncio.run(play(cfg, model_dir, work))
    summary = summary_of(
        cfg, table, policy=model_dir, split=args.split, group_size=args.group_size, time_s=time.monotonic() - start
    )
    summary["env_restarts"] = env_restarts
    write_results(out, table, summary)
    print(report(summary))
    print(f"freelunch: wrote {out / 'trajectories.parquet'} and {out / 'summary.json'}")
    return 0


def summary_of(cfg: Config, table: pa.Table, *, policy: str, split: str, group_size: int, time_s: float) -> dict:
    """summary.json of an evaluation: what was played, the statistics of `summarize`, and the settings."""
    return {
        "policy": policy,
        "env": cfg.env.name,
        "split": split,
        "num_tasks": table.num_rows // group_size,
        "group_size": group_size,
        "seed": cfg.seed,
        **summarize(table),
        "time_s": round(time_s, 2),
        "env_config": dataclasses.asdict(cfg.env),
        "actors_config": dataclasses.asdict(cfg.actors),
    }


def write_results(out: Path, table: pa.Table, summary: dict) -> None:
    """out/trajectories.parquet and out/summary.json, each atomically; the summary last, so it marks a whole eval."""
    out.mkdir(parents=True, exist_ok=True)
    write_parquet(table, out / "trajectories.parquet")
    write_atomically(out / "summary.json", json.dumps(summary, indent=2) + "\n")


def plan(args: argparse.Namespace) -> tuple[Config, list[Work]]:
    """The settings and the trajectories to play: group_size per task, for the first num_tasks of the split."""
    for item in args.overrides:
        key = item.partition("=")[0].strip()
        if key == "env.name":
            raise ValueError("give the environment with --env, not env.name=")
        if key != "seed" and not key.startswith(("env.", "actors.")):
            raise ValueError(f"eval takes seed, env.* and actors.* settings; {item!r} is not one of them")
    if args.group_size < 1:
        raise ValueError(f"--group-size must be at least 1, got {args.group_size}")
    cfg = load(None, [*args.overrides, f"env.name={args.env}"])
    env = cfg.env
    tasks = make_env(env.name, seed=cfg.seed, **env.make_env_kwargs()).tasks(args.split)
    num_tasks = len(tasks) if args.num_tasks is None else args.num_tasks
    if not 1 <= num_tasks <= len(tasks):
        raise ValueError(
            f"--num-tasks must be in 1..{len(tasks)}: the {args.split} split of {env.name} has {len(tasks)} tasks "
            f"(env.num_tasks={env.num_tasks}), got {num_tasks}"
        )
    return cfg, eval_work(cfg.seed, tasks[:num_tasks], args.group_size)


def eval_work(seed: int, tasks: list[Task], group_size: int, prefix: str = "") -> list[Work]:
    """group_size trajectories of each task, the env's luck seeded per trajectory by (seed, task's place, j): the
    same seed plays the same tasks with the same luck. prefix keeps the ids apart from the run's other ones."""
    from actors.rollout import Work

    work = []
    for i, task in enumerate(tasks):
        for j in range(group_size):
            env_seed = hash((seed, i, j)) % 2**31  # hash of a tuple of ints: the same in every process
            group_id = prefix + task.task_id
            work.append(Work(task=task, group_id=group_id, trajectory_id=f"{group_id}-{j}", env_seed=env_seed))
    return work


async def play(cfg: Config, model_dir: str, work: list[Work]) -> tuple[pa.Table, int]:
    """Play `work` with one in-process rollout actor; returns its trajectories in `work` order and the env restarts."""
    from actors.rollout import RolloutActor  # starts vLLM: only once the input is known to be good

    played: list[bytes] = []
    actor = RolloutActor(cfg.actors, cfg.env, model_dir=model_dir, seed=cfg.seed, sink=played.append)
    try:
        await actor.collect(work)
    finally:
        await actor.close()
    table = concat([from_ipc(b) for b in played])
    row = {trajectory_id: i for i, trajectory_id in enumerate(table.column("trajectory_id").to_pylist())}
    return table.take([row[w.trajectory_id] for w in work]), (await actor.stats())["env_restarts"]


# --- statistics ---
def summarize(table: pa.Table) -> dict:
    """Success rate with its 95% interval, outcome and step means, and finish reason counts of a trajectory table."""
    rate, interval, method = success_interval(table.column("task_id").to_pylist(), table.column("success").to_pylist())
    finish = table.column("finish_reason").to_pylist()
    return {
        "num_trajectories": table.num_rows,
        "success_rate": rate,
        "success_interval_95": list(interval),
        "interval_method": method,
        "outcome_mean": statistics.fmean(table.column("outcome").to_pylist()),
        "steps_mean": statistics.fmean(table.column("num_steps").to_pylist()),
        "finish_reasons": {reason: finish.count(reason) for reason in sorted(set(finish))},
    }


def success_interval(task_ids: list[str], success: list[bool]) -> tuple[float, tuple[float, float], str]:
    """Success rate, its 95% interval and how the interval was computed.

    One trajectory per task: Wilson over trajectories. Several: the trajectories of a task are correlated and
    the tasks are the independent draws, so a t interval over the per-task success rates; when those are all
    equal (e.g. all 0) it would have no width, and Wilson over the tasks is used instead.
    """
    per_task: dict[str, list[bool]] = {}
    for task_id, s in zip(task_ids, success):
        per_task.setdefault(task_id, []).append(s)
    if len(per_task) == len(success):
        method = f"Wilson score interval over {len(success)} trajectories, one per task"
        return statistics.fmean(success), wilson_interval(sum(success), len(success)), method
    rates = [statistics.fmean(s) for s in per_task.values()]
    rate, n = statistics.fmean(rates), len(rates)
    if len(set(rates)) > 1:
        return rate, t_interval(rates), f"t interval over the success rates of {n} tasks"
    return rate, wilson_interval(rate * n, n), f"Wilson score interval over {n} tasks (equal per-task success rates)"


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (Wilson 1927); stays inside [0, 1] and is sound at 0 and n."""
    if n < 1:
        raise ValueError("wilson_interval needs at least one trial")
    p = successes / n
    scale = 1 + z * z / n
    center = (p + z * z / (2 * n)) / scale
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / scale
    return max(0.0, center - half), min(1.0, center + half)


def t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of `values` (at least two), clipped to [0, 1]."""
    if len(values) < 2:
        raise ValueError("t_interval needs at least two values")
    mean = statistics.fmean(values)
    half = t_quantile((1 + confidence) / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return max(0.0, mean - half), min(1.0, mean + half)


def t_quantile(p: float, df: int) -> float:
    """The p-quantile (0.5 < p < 1) of Student's t with df degrees of freedom, to about 1e-9.

    The standard library has no t distribution: bisection on the CDF, 0.5 + the density's integral from 0
    by Simpson's rule on 2000 intervals.
    """
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x: float, intervals: int = 2000) -> float:
        h = x / intervals
        f = [math.exp(log_norm - (df + 1) / 2 * math.log1p((i * h) ** 2 / df)) for i in range(intervals + 1)]
        return 0.5 + h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))

    low, high = 0.0, 1.0
    while cdf(high) < p:
        low, high = high, 2 * high
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < p else (low, mid)
    return (low + high) / 2


def report(summary: dict) -> str:
    """The summary as three lines for the terminal."""
    low, high = summary["success_interval_95"]
    finish = ", ".join(f"{reason} {count}" for reason, count in summary["finish_reasons"].items())
    return (
        f"freelunch eval: {summary['env']} {summary['split']} split, {summary['num_tasks']} tasks x "
        f"{summary['group_size']}, policy {summary['policy']}\n"
        f"success {summary['success_rate']:.3f}  95% [{low:.3f}, {high:.3f}]  ({summary['interval_method']})\n"
        f"outcome {summary['outcome_mean']:.3f} | steps {summary['steps_mean']:.2f} | finish {finish} | "
        f"env restarts {summary['env_restarts']} | {summary['time_s']:.1f} s"
    )
