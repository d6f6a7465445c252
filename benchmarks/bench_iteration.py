"""The default run at two commits, one after the other: iteration time per phase and peak memory of each role.

    python benchmarks/bench_iteration.py --old OLD_CHECKOUT [--new .] [--iterations 4] [--out runs/bench_iteration]
        [-- extra dotted overrides for both runs]

Each checkout runs `freelunch train num_iterations=N` with its own defaults (SmolLM2-135M-Instruct on corridor)
from its own code (PYTHONPATH), into OUT/old and OUT/new. Reported: the median of iterations 2..N of every phase
(`time/collect`, `time/score`, `time/update`, `time/broadcast`, `time/iteration`), new/old as a ratio, the wall
time of each run, and the peak RSS of each role's processes (Ray worker titles `ray::Learner`, `ray::Scorer`,
`ray::RolloutActor`, the driver), sampled every second from /proc while the run goes.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

PHASES = ("time/collect", "time/score", "time/update", "time/broadcast", "time/iteration")
ROLES = {"ray::Learner": "learner", "ray::Scorer": "scorer", "ray::RolloutActor": "rollout"}


def peak_rss(stop: threading.Event, driver_pid: int, peaks: dict[str, float]) -> None:
    """Until `stop`, the largest RSS (GiB) seen of each role's process (summed over its processes)."""
    while not stop.wait(1.0):
        now: dict[str, float] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                title = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
                rss_kib = next(
                    int(line.split()[1])
                    for line in Path(f"/proc/{entry}/status").read_text().splitlines()
                    if line.startswith("VmRSS:")
                )
            except (OSError, StopIteration, ValueError):
                continue
            role = (
                "driver"
                if int(entry) == driver_pid
                else next((r for t, r in ROLES.items() if title.startswith(t)), None)
            )
            if role:
                now[role] = now.get(role, 0.0) + rss_kib / 2**20
        for role, gib in now.items():
            peaks[role] = max(peaks.get(role, 0.0), gib)


def run(repo: Path, run_dir: Path, iterations: int, extra: list[str]) -> tuple[list[dict], float, dict[str, float]]:
    if run_dir.exists():
        raise SystemExit(f"{run_dir} exists; delete it to rerun")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(repo)}
    command = [
        sys.executable,
        "-m",
        "cluster.cli",
        "train",
        f"num_iterations={iterations}",
        *extra,
        "--run-dir",
        str(run_dir),
    ]
    print(f"running in {repo}: {' '.join(command[1:])}", flush=True)
    peaks: dict[str, float] = {}
    stop = threading.Event()
    start = time.perf_counter()
    with open(run_dir.with_suffix(".log"), "w") as log:
        process = subprocess.Popen(command, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
        sampler = threading.Thread(target=peak_rss, args=(stop, process.pid, peaks), daemon=True)
        sampler.start()
        code = process.wait()
    wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    if code != 0:
        raise SystemExit(f"{run_dir} failed (exit {code}); see {run_dir.with_suffix('.log')}")
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return metrics, wall, peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="checkout of the baseline commit")
    parser.add_argument("--new", type=Path, default=Path(__file__).resolve().parents[1], help="checkout to measure")
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_iteration"))
    parser.add_argument("extra", nargs="*", help="dotted.key=value overrides for both runs")
    args = parser.parse_args()
    results = {}
    for name, repo in (("old", args.old.resolve()), ("new", args.new.resolve())):
        results[name] = run(repo, args.out.resolve() / name, args.iterations, args.extra)
    warm = {name: metrics[1:] for name, (metrics, _, _) in results.items()}
    print(f"\nmedian of iterations 2..{args.iterations}, seconds\n")
    print("| phase | old | new | new/old |\n|---|---|---|---|")
    for phase in PHASES:
        old, new = (statistics.median(m[phase] for m in warm[name]) for name in ("old", "new"))
        print(f"| {phase.removeprefix('time/')} | {old:.2f} | {new:.2f} | **{new / old:.2f}×** |")
    old_wall, new_wall = results["old"][1], results["new"][1]
    print(f"| wall time of the run | {old_wall:.0f} | {new_wall:.0f} | {new_wall / old_wall:.2f}× |")
    print("\npeak RSS per role, GiB\n\n| role | old | new |\n|---|---|---|")
    for role in ("driver", "rollout", "scorer", "learner"):
        print(f"| {role} | {results['old'][2].get(role, 0):.2f} | {results['new'][2].get(role, 0):.2f} |")
    for name, (metrics, _, _) in results.items():
        print(f"outcome per iteration, {name}:", " ".join(f"{m['rollout/outcome_mean']:.3f}" for m in metrics))


if __name__ == "__main__":
    main()
