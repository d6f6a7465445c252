"""Asynchronous rollouts, measured: iteration wall time at max_staleness 1 vs max(collect, learn) at 0.

    python benchmarks/bench_async.py [--iterations 8] [--out DIR] [-- extra freelunch train arguments]

Runs `freelunch train` twice in a row with the same config (the default: SmolLM2-135M-Instruct on
corridor), once on-policy (`learner.max_staleness=0`: collect, then score + update + broadcast) and
once with rollouts one iteration ahead (`=1`). The bound is what perfect overlap would give:
max(median collect, median learn) of the on-policy run, learn = score + update + broadcast. The issue's
goal is median iteration(1) / bound <= 1.15. Iterations before the overlap starts (the first two) are
excluded as warm-up. Also writes the outcome curve of both runs to OUT/async_outcome.png.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

WARMUP = 2  # iteration 0 has nothing to overlap with; iteration 1 still pays engine and kernel warm-up


def run(staleness: int, iterations: int, out: Path, extra: list[str]) -> list[dict]:
    run_dir = out / f"max_staleness_{staleness}"
    if not (run_dir / "policy").exists():
        command = [str(Path(sys.executable).parent / "freelunch"), "train", *extra, f"num_iterations={iterations}"]
        command += [f"learner.max_staleness={staleness}", "--run-dir", str(run_dir)]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        print(f"max_staleness={staleness}: `freelunch train` took {time.perf_counter() - start:.0f} s", flush=True)
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def median(metrics: list[dict], key) -> float:
    return statistics.median(key(m) for m in metrics[WARMUP:])


def learn(m: dict) -> float:
    return m["time/score"] + m["time/update"] + m["time/broadcast"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("runs") / time.strftime("bench-async-%Y%m%d-%H%M%S"))
    parser.add_argument("extra", nargs="*", help="arguments passed on to freelunch train")
    args = parser.parse_args()
    if args.iterations <= WARMUP:
        parser.error(f"--iterations must exceed the {WARMUP} warm-up iterations")
    sync, ahead = (run(s, args.iterations, args.out, args.extra) for s in (0, 1))

    collect, learn_s = median(sync, lambda m: m["time/collect"]), median(sync, learn)
    bound = max(collect, learn_s)
    iteration = {s: median(m, lambda m: m["time/iteration"]) for s, m in ((0, sync), (1, ahead))}
    print("| run | median s |\n|---|---|")
    print(f"| max_staleness=0: collect | {collect:.2f} |")
    print(f"| max_staleness=0: learn (score+update+broadcast) | {learn_s:.2f} |")
    print(f"| max_staleness=0: iteration | {iteration[0]:.2f} |\n| max_staleness=1: iteration | {iteration[1]:.2f} |")
    print(f"| max_staleness=1: wait for the batch | {median(ahead, lambda m: m['time/collect']):.2f} |")
    print(f"iteration(1) / max(collect, learn) = {iteration[1] / bound:.2f}  (goal <= 1.15)")
    print(f"iteration(0) / max(collect, learn) = {iteration[0] / bound:.2f}")
    print(f"speed-up of max_staleness=1 over 0: {iteration[0] / iteration[1]:.2f}x")
    for name, metrics in (("0", sync), ("1", ahead)):
        curve = " ".join(f"{m['rollout/outcome_mean']:.2f}" for m in metrics)
        stale = statistics.mean(m["rollout/staleness_mean"] for m in metrics)
        print(f"outcome per iteration, max_staleness={name}: {curve} (mean staleness {stale:.2f})")
    plot(sync, ahead, args.out / "async_outcome.png")
    return 0


def plot(sync: list[dict], ahead: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    for label, metrics in (("max_staleness=0", sync), ("max_staleness=1", ahead)):
        seconds = [sum(m["time/iteration"] for m in metrics[: i + 1]) for i in range(len(metrics))]
        axis.plot(seconds, [m["rollout/outcome_mean"] for m in metrics], marker="o", label=label)
    axis.set_xlabel("wall time, s")
    axis.set_ylabel("outcome mean")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    print(f"outcome curves: {path}")


if __name__ == "__main__":
    sys.exit(main())
