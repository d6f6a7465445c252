"""The default run, measured: per-phase breakdown of an iteration and the learning check.

    python benchmarks/quickstart.py [--run-dir DIR] [-- extra freelunch train arguments]

Runs `freelunch train` with the defaults (SmolLM2-135M-Instruct on corridor) unless --run-dir
points at a finished run, then prints a markdown table of the phases (collect / score / update /
broadcast, median seconds and share of the iteration, first iteration excluded as warm-up) and the
outcome curve. The learning check passes when the mean outcome of the last 3 iterations exceeds
the first iteration's by --margin; the exit status says so.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

PHASES = ["time/collect", "time/score", "time/update", "time/broadcast"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", type=Path, help="a finished run to read instead of training")
    parser.add_argument("--margin", type=float, default=0.1)
    parser.add_argument("extra", nargs="*", help="arguments passed on to freelunch train")
    args = parser.parse_args()
    run_dir = args.run_dir
    if run_dir is None or not (run_dir / "metrics.jsonl").exists():
        run_dir = run_dir or Path("runs") / time.strftime("quickstart-%Y%m%d-%H%M%S")
        start = time.perf_counter()
        command = [str(Path(sys.executable).parent / "freelunch"), "train", *args.extra, "--run-dir", str(run_dir)]
        subprocess.run(command, check=True)
        print(f"wall time of `freelunch train`: {time.perf_counter() - start:.0f} s")
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    warm = metrics[1:] or metrics
    iteration = statistics.median(m["time/iteration"] for m in warm)
    print("| phase | median s | share of iteration |\n|---|---|---|")
    for phase in PHASES:
        seconds = statistics.median(m[phase] for m in warm)
        print(f"| {phase.removeprefix('time/')} | {seconds:.2f} | {seconds / iteration:.0%} |")
    print(f"| iteration | {iteration:.2f} | 100% |")
    outcomes = [m["rollout/outcome_mean"] for m in metrics]
    print("outcome per iteration:", " ".join(f"{o:.3f}" for o in outcomes))
    first, last = outcomes[0], statistics.mean(outcomes[-3:])
    passed = last > first + args.margin
    print(
        f"learning check: last-3 mean {last:.3f} vs first {first:.3f} (margin {args.margin}): "
        f"{'PASS' if passed else 'FAIL'}"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
