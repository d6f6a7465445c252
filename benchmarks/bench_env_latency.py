"""Benchmark of env step latency per suite, in this process: cold start, make, reset and step times.

For every env given (default: the built-ins and one or two games of each installed suite), trajectories are
played as a rollout actor plays them: a new env instance per trajectory (`make`), `reset`, then steps until
done or --max-steps, by a seeded random policy over the valid actions the observation lists (or, where the
suite lists none, over a small fixed set of plausible actions). Tasks cycle over the first --tasks train
tasks, which are reset once before timing; that first make + reset is the cold start (a JVM, a tw-make run).
Run: python benchmarks/bench_env_latency.py [--steps 300] [--envs corridor tools textarena/Sokoban-v0]
"""

import argparse
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
from envs.adapter import listed_actions  # noqa: E402

DEFAULT_ENVS = (
    "corridor",
    "tools",
    "textworld_express/coin",
    "textworld_express/cookingworld",
    "scienceworld/boil",
    "textworld/coin_collector",
    "textworld/cooking",
    "textarena/TowerOfHanoi-v0",
    "textarena/Sokoban-v0",
)
# Plausible actions for envs whose observations list none.
ACTIONS = {
    "scienceworld": ["look around", "open door to kitchen", "go to kitchen", "go to hallway", "open cupboard",
                     "pick up thermometer", "activate stove", "look at stove", "inventory", "wait1", "fly"],
    "textarena/TowerOfHanoi-v0": ["[A B]", "[A C]", "[B A]", "[B C]", "[C A]", "[C B]", "move it"],
    "textarena/Sokoban-v0": ["[up]", "[down]", "[left]", "[right]", "push"],
}  # fmt: skip
ENV_OPTIONS = {"tools": {"latency_s": 0.0}}  # the sleep it simulates would be all we measure


def choose(name: str, observation: str, luck: random.Random) -> str:
    """The random policy: a valid action listed in the observation, else one of ACTIONS."""
    if name == "corridor":
        return luck.choice(re.findall(r"Doors: ([a-z, ]+)\.", observation)[-1].split(", "))
    if name == "tools":
        order = re.findall(r"[A-H]-\d\d", observation)
        calls = [("get_order", "order_id", order[0] if order else "A-10"), ("get_price", "item", "lamp")]
        calls += [("calculate", "expression", "3 * 4"), ("submit", "answer", "12")]
        tool, argument, value = luck.choice(calls)
        return f'<tool_call>{{"name": "{tool}", "arguments": {{"{argument}": "{value}"}}}}</tool_call>'
    if listed_actions(observation):
        return luck.choice(listed_actions(observation))
    return luck.choice(ACTIONS.get(name, ACTIONS.get(name.split("/")[0], ["look"])))


def measure(name: str, steps: int, num_tasks: int, max_steps: int) -> dict:
    """Cold start (s), per-call times (ms) of make, reset and step, and observation lengths (characters)."""
    options = ENV_OPTIONS.get(name, {}) | {"max_steps": max_steps}
    start = time.perf_counter()
    tasks = make_env(name, **options).tasks("train")[:num_tasks]
    make_env(name, **options).reset(tasks[0])
    cold = time.perf_counter() - start
    for task in tasks[1:]:  # untimed: e.g. TextWorld generates each task's game once
        make_env(name, **options).reset(task)
    times: dict[str, list[float]] = {"make": [], "reset": [], "step": []}
    lengths, luck, trajectory = [], random.Random(0), 0
    while len(times["step"]) < steps:
        task, trajectory = tasks[trajectory % len(tasks)], trajectory + 1
        env = timed(times["make"], make_env, name, seed=trajectory, **options)
        observation, done = timed(times["reset"], env.reset, task), False
        lengths.append(len(observation))
        while not done and len(times["step"]) < steps:
            action = choose(name, observation, luck)
            result = timed(times["step"], env.step, action)
            observation, done = result.observation, result.done
            lengths.append(len(observation))
    return {"cold_s": cold, "lengths": lengths, **times}


def timed(into: list[float], function, *args, **kwargs):
    """function(*args, **kwargs), with its duration in ms appended to `into`."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    into.append((time.perf_counter() - start) * 1e3)
    return result


def p95(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, round(0.95 * (len(values) - 1)))]


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return f"{os.cpu_count()} cores (nproc), {cpu}, {platform.machine()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=DEFAULT_ENVS, help="env names (see envs.available())")
    parser.add_argument("--steps", type=int, default=300, help="timed steps per env")
    parser.add_argument("--tasks", type=int, default=4, help="train tasks the trajectories cycle over")
    parser.add_argument("--max-steps", type=int, default=20, help="steps per trajectory at most")
    args = parser.parse_args()
    print(f"machine: {machine()}; python {platform.python_version()}")
    print("| env | cold start s | make ms | reset ms median / p95 | step ms median / p95 | steps | obs chars median |")
    print("|---|---|---|---|---|---|---|")
    for name in args.envs:
        try:
            m = measure(name, args.steps, args.tasks, args.max_steps)
        except ImportError as error:  # the suite's extra is not installed
            print(f"| {name} | not installed: {error} |")
            continue
        reset, step = m["reset"], m["step"]
        print(
            f"| {name} | {m['cold_s']:.2f} | {statistics.median(m['make']):.2f} | "
            f"{statistics.median(reset):.2f} / {p95(reset):.2f} | {statistics.median(step):.3f} / {p95(step):.3f} | "
            f"{len(step)} | {statistics.median(m['lengths']):.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
