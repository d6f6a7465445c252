"""Benchmark of lockstep sampling (`actors.deterministic`): collect wall time with and without it, same run.

One rollout actor (the real vLLM engine, env processes) plays the same work again and again, alternating
plain and lockstep collects; each collect is reseeded the same way and starts with an empty prefix cache (as
after a broadcast), so lockstep collects must give identical trajectories; the report counts the repeated
trajectories that differ, for both modes. Only `collect` is timed (not the engine's start). Envs: the
corridor (env steps ~0.002 ms: lockstep waits for almost nothing) and the tool-calling env with its default
10 ms tool latency and with 50 ms (a slow tool holds every engine step in lockstep).
Run: python benchmarks/bench_lockstep.py [--policy smollm2-135m-instruct] [--trajectories 32] [--repeats 3]
"""

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ENVS = {
    "corridor": [],
    "tools (10 ms calls)": ["env.options.latency_s=0.01"],
    "tools (50 ms calls)": ["env.options.latency_s=0.05"],
}


def plan(env: str, overrides: list[str], trajectories: int):
    from cluster.eval import plan as eval_plan

    name = env.split(" ")[0]
    args = argparse.Namespace(env=name, split="train", num_tasks=trajectories // 4, group_size=4, overrides=overrides)
    return eval_plan(args)


async def collect(actor, work, lockstep: bool) -> tuple[float, list]:
    played: list[bytes] = []
    actor.sink, actor.engine.lockstep = played.append, lockstep
    # As after a broadcast: with prompts cached by an earlier collect, a request's prompt KV would come from
    # the cache instead of being computed, which changes its numbers in the last bits.
    actor.engine.reset_prefix_cache()
    start = time.perf_counter()
    await actor.collect(work)
    seconds = time.perf_counter() - start
    from actors.trajectory import from_ipc

    rows = sorted((from_ipc(b).to_pylist()[0] for b in played), key=lambda r: r["trajectory_id"])
    return seconds, [(r["trajectory_id"], r["tokens"]) for r in rows]


async def measure(actor, env: str, overrides: list[str], args) -> dict:
    cfg, work = plan(env, overrides, args.trajectories)
    actor.env = cfg.env  # one engine per process: the actor stays, the env changes
    times = {False: [], True: []}
    samples = {False: [], True: []}
    await collect(actor, work, lockstep=False)  # warm-up: this env's batch shapes and processes
    for _ in range(args.repeats):
        for lockstep in (False, True):
            seconds, played = await collect(actor, work, lockstep)
            times[lockstep].append(seconds)
            samples[lockstep].append(played)
    plain, lock = statistics.median(times[False]), statistics.median(times[True])
    return {
        "env": env,
        "plain_s": plain,
        "lockstep_s": lock,
        "ratio": lock / plain,
        "lockstep_differ": differing(samples[True]),
        "plain_differ": differing(samples[False]),
    }


def differing(repeats: list[list]) -> int:
    """Trajectories of the later repeats whose tokens differ from the first repeat's (0: reproducible)."""
    return sum(a != b for later in repeats[1:] for a, b in zip(repeats[0], later))


async def run(args) -> None:
    from actors.rollout import RolloutActor
    from cluster.models import resolve_model

    cfg, _ = plan(args.envs[0], ENVS[args.envs[0]], args.trajectories)
    actor = RolloutActor(cfg.actors, cfg.env, model_dir=str(resolve_model(args.policy)), seed=0, sink=None)
    try:
        for env in args.envs:
            r = await measure(actor, env, ENVS[env], args)
            print(
                f"| {r['env']} | {r['plain_s']:.2f} | {r['lockstep_s']:.2f} | {r['ratio']:.2f} "
                f"| {r['lockstep_differ']} | {r['plain_differ']} |",
                flush=True,
            )
    finally:
        await actor.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", default="smollm2-135m-instruct")
    parser.add_argument("--trajectories", type=int, default=32, help="per collect, in groups of 4")
    parser.add_argument("--repeats", type=int, default=3, help="collects per mode (median reported)")
    parser.add_argument("--envs", nargs="+", default=list(ENVS), choices=list(ENVS))
    args = parser.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; policy {args.policy}")
    print(f"{args.trajectories} trajectories per collect, median of {args.repeats} collects per mode\n")
    n = args.trajectories * (args.repeats - 1)
    differ = f"lockstep: of {n} repeated trajectories, differ"
    print(f"| env | plain s | lockstep s | lockstep / plain | {differ} | plain: differ |")
    print("|---|---|---|---|---|---|")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
