"""Benchmark of env isolation: the corridor env called in this process vs through EnvProcess (a child, JSON lines).

Both arms play the same trajectories (a seeded policy takes the open door 70% of the time) and must give the same
transcripts. Reported: the start-up of a fresh env process (start + first reset); per-call latency of reset/step
with trajectories one after another; env calls per second with `--concurrency` trajectories at once, as in a
rollout actor's collect. Only the env side is timed: no engine.
Run: python benchmarks/bench_env_isolation.py   (defaults: 200 trajectories, concurrency 16, best of 3)
"""

import argparse
import asyncio
import os
import platform
import random
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envs import make_env  # noqa: E402
from envs.process import EnvPool, EnvProcess, InProcessEnv  # noqa: E402

OPTIONS = {"num_rooms": 3, "slip": 0.2, "max_steps": 6, "num_tasks": 64}


async def play(env, task, seed: int, spec: bool) -> tuple[list, int]:
    """One trajectory; returns its transcript and the number of env calls."""
    if spec:
        env.make("corridor", seed, OPTIONS)
    choose = random.Random(seed)
    observation = await env.reset(task)
    transcript, calls = [observation], 1
    while True:
        doors = re.findall(r"Doors: ([a-z, ]+)\.", observation)[-1].split(", ")
        open_door = re.findall(r"The (\w+) door is open", observation)[-1]
        result = await env.step(open_door if choose.random() < 0.7 else choose.choice(doors))
        transcript.append(result)
        calls += 1
        if result.done:
            return transcript, calls
        observation = result.observation


async def sequential(arm: str, n: int) -> tuple[float, list]:
    """Seconds per env call, trajectories one after another (one env per trajectory, as a rollout actor does)."""
    tasks = make_env("corridor", **OPTIONS).tasks("train")
    process = await EnvProcess.start() if arm == "env-process" else None
    transcripts, calls, start = [], 0, time.perf_counter()
    for i in range(n):
        env = process or InProcessEnv(make_env("corridor", seed=i, **OPTIONS))
        transcript, c = await play(env, tasks[i % len(tasks)], i, spec=process is not None)
        transcripts.append(transcript)
        calls += c
    elapsed = time.perf_counter() - start
    if process:
        await process.close()
    return elapsed / calls, transcripts


async def concurrent(arm: str, n: int, concurrency: int) -> float:
    """Env calls per second with `concurrency` trajectories in flight (the pool warmed up first)."""
    tasks = make_env("corridor", **OPTIONS).tasks("train")
    pool = EnvPool()
    slots = asyncio.Semaphore(concurrency)

    async def one(i: int) -> int:
        async with slots:
            if arm == "in-process":
                await asyncio.sleep(0)  # the same yield an env-process call gives the other trajectories
                env = InProcessEnv(make_env("corridor", seed=i, **OPTIONS))
                return (await play(env, tasks[i % len(tasks)], i, spec=False))[1]
            async with pool.env() as env:
                return (await play(env, tasks[i % len(tasks)], i, spec=True))[1]

    await asyncio.gather(*(one(i) for i in range(concurrency)))  # warm-up: the pool's children start here
    start = time.perf_counter()
    calls = sum(await asyncio.gather(*(one(i) for i in range(n))))
    elapsed = time.perf_counter() - start
    await pool.close()
    return calls / elapsed


async def startup(repeats: int) -> float:
    """Median seconds from EnvProcess.start to the answer of the first reset (interpreter start + import + make)."""
    task = make_env("corridor", **OPTIONS).tasks("train")[0]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        process = await EnvProcess.start()
        process.make("corridor", 0, OPTIONS)
        await process.reset(task)
        times.append(time.perf_counter() - start)
        await process.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trajectories", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    latency: dict[str, list[float]] = {"in-process": [], "env-process": []}
    rate: dict[str, list[float]] = {"in-process": [], "env-process": []}
    for _ in range(args.repeats):  # arms take turns, so load from other work hits both
        transcripts = {}
        for arm in latency:
            seconds, transcripts[arm] = asyncio.run(sequential(arm, args.trajectories))
            latency[arm].append(seconds)
            rate[arm].append(asyncio.run(concurrent(arm, args.trajectories, args.concurrency)))
        assert transcripts["in-process"] == transcripts["env-process"], "the arms played different trajectories"
    start_s = asyncio.run(startup(5))
    best_latency = {arm: min(v) for arm, v in latency.items()}
    best_rate = {arm: max(v) for arm, v in rate.items()}
    print(f"{args.trajectories} trajectories, concurrency {args.concurrency}, best of {args.repeats}\n")
    print("| arm | µs per env call (sequential) | env calls/s (concurrent) |")
    print("|---|---|---|")
    for arm in latency:
        print(f"| {arm} | {best_latency[arm] * 1e6:.0f} | {best_rate[arm]:.0f} |")
    ratio = best_latency["env-process"] / best_latency["in-process"]
    extra_us = (best_latency["env-process"] - best_latency["in-process"]) * 1e6
    print(f"\nlatency env-process / in-process = {ratio:.1f}x (+{extra_us:.0f} µs per call)")
    print(f"throughput env-process / in-process = {best_rate['env-process'] / best_rate['in-process']:.2f}x")
    print(f"start-up of an env process (start + make + first reset), median of 5: {start_s * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
