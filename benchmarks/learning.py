"""Learning benchmark: outcome-only GRPO vs GRPO + progress advantage, several seeds, trajectories to a bar.

    python benchmarks/learning.py [--env corridor] [--arms grpo pa] [--seeds 0 1 2] [--out runs/learning]
        [--repo DIR] [--bar 0.5] [--window 2] [--plot benchmarks/results/learning_corridor.png]
        [-- extra freelunch train overrides, e.g. num_iterations=10]

Arms: `grpo` is outcome-only GRPO: `learner.scorer=none` (the scorer computes only the reference
log-probs for the KL term; the progress advantage is exactly 0, no PRM is built or trained) and
`learner.progress_coef=0`. `pa` is the default run: the implicit-PRM scorer, progress_coef 0.5.
Both arms of a seed share the task order and the initial policy; with asynchronous rollouts (the default
max_staleness 1) sampling is not reproducible, so they share no trajectories.

Each (arm, seed) is one `python -m cluster.cli train` subprocess, run one after the other, with cwd and
PYTHONPATH set to --repo (default: the repository holding this file), so a clone pinned to a commit can
be measured while the working tree changes. Before the first run the script checks that both the
driver and a Ray worker import cluster/actors/learner/envs from --repo. Every run gets free dashboard
and metrics ports. A run directory whose metrics.jsonl already has all its iterations is read, not rerun.

Success of a trajectory: the Parquet column `success` when present, else outcome >= 1.0. The bar is
reached at the first iteration where the success rate averaged over the last --window iterations is
>= --bar; trajectories to the bar = every trajectory of the iterations up to and including that one.
A run that never reaches it is censored at its total (shown as ">N"). Prints a markdown table per run,
per-seed ratios pa/grpo and wall times, and writes learning curves (success rate and outcome mean vs
trajectories; thin lines per seed, thick lines the mean over seeds) to --plot.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ARMS = {
    "grpo": ["learner.scorer=none", "learner.progress_coef=0"],
    "pa": [],  # the defaults: implicit_prm scorer, progress_coef 0.5
}
# What `freelunch train` sets before importing Ray (cluster/cli.py DEFAULT_ENV); the import check needs it too.
RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
IMPORT_CHECK = """
import json, ray, cluster, actors
ray.init(num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1")
names = ("cluster", "actors", "learner", "envs")
worker = ray.get(ray.remote(lambda: [__import__(n).__file__ for n in names]).remote())
print(json.dumps({"driver": [__import__(n).__file__ for n in names], "worker": worker}))
ray.shutdown()
"""


@dataclass
class Curve:
    """One run, per iteration: trajectories so far, success rate, outcome mean; its wall time and median
    iteration time (less sensitive to other jobs on the machine than the wall time, and without start-up)."""

    arm: str
    seed: int
    trajectories: np.ndarray
    success: np.ndarray
    outcome: np.ndarray
    wall_s: float
    iteration_s: float


# --- running ---


def subprocess_env(repo: Path) -> dict[str, str]:
    env = {**RAY_ENV, **os.environ}  # a user's own setting wins, as in the CLI
    env["PYTHONPATH"] = str(repo)
    return env


def check_imports(repo: Path) -> None:
    """The driver and a Ray worker must import the project from repo, not from the editable install."""
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK], cwd=repo, env=subprocess_env(repo), capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"import check failed:\n{out.stderr[-3000:]}")
    files = json.loads(out.stdout.strip().splitlines()[-1])
    outside = [f for f in files["driver"] + files["worker"] if not Path(f).resolve().is_relative_to(repo)]
    if outside:
        raise SystemExit(f"the project is imported from outside {repo}: {outside}")
    print(f"import check: driver and Ray worker import the project from {repo}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def finished(run_dir: Path, num_iterations: int) -> bool:
    path = run_dir / "metrics.jsonl"
    return path.exists() and len(path.read_text().splitlines()) >= num_iterations


def num_iterations(repo: Path, overrides: list[str]) -> int:
    """The resolved num_iterations of a run with these overrides (`freelunch train --dry-run`)."""
    command = [sys.executable, "-m", "cluster.cli", "train", *overrides, "--dry-run"]
    out = subprocess.run(command, cwd=repo, env=subprocess_env(repo), capture_output=True, text=True, check=True)
    line = next(line for line in out.stdout.splitlines() if line.startswith("num_iterations"))
    return int(line.split("=")[1])


def train(repo: Path, run_dir: Path, overrides: list[str]) -> float:
    """One `freelunch train` run, its output in run_dir.log; returns its wall time in seconds."""
    if run_dir.exists():  # metrics.jsonl is appended to: a rerun into a partial run would mix two runs
        raise SystemExit(f"{run_dir} holds an unfinished run; delete it to rerun")
    ports = [f"cluster.dashboard_port={free_port()}", f"cluster.metrics_export_port={free_port()}"]
    command = [sys.executable, "-m", "cluster.cli", "train", *overrides, *ports, "--run-dir", str(run_dir)]
    print(f"running: {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    with open(run_dir.with_suffix(".log"), "w") as log:
        code = subprocess.run(command, cwd=repo, env=subprocess_env(repo), stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if code.returncode != 0:
        raise SystemExit(f"{run_dir} failed (exit {code.returncode}); see {run_dir.with_suffix('.log')}")
    (run_dir / "benchmark.json").write_text(json.dumps({"wall_s": wall, "overrides": overrides}) + "\n")
    print(f"finished {run_dir.name} in {wall:.0f} s", flush=True)
    return wall


# --- reading ---


def read_run(run_dir: Path, arm: str, seed: int) -> Curve:
    """Per-iteration success rate and outcome mean from trajectories/*.parquet; times from benchmark.json and
    metrics.jsonl."""
    files = sorted((run_dir / "trajectories").glob("iteration_*.parquet"))
    if not files:
        raise SystemExit(f"{run_dir}: no trajectories/iteration_*.parquet; expected a finished freelunch run")
    counts, success, outcome = [], [], []
    for path in files:
        table = pq.read_table(path)
        o = table.column("outcome").to_numpy().astype(np.float64)
        s = table.column("success").to_numpy() if "success" in table.column_names else o >= 1.0
        counts.append(len(o))
        success.append(float(np.mean(s)))
        outcome.append(float(np.mean(o)))
    bench = run_dir / "benchmark.json"
    wall = json.loads(bench.read_text())["wall_s"] if bench.exists() else float("nan")
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    iteration = float(np.median([m["time/iteration"] for m in metrics]))
    return Curve(arm, seed, np.cumsum(counts), np.array(success), np.array(outcome), wall, iteration)


# --- algorithm ---


def trajectories_to_bar(curve: Curve, bar: float, window: int) -> tuple[int, bool]:
    """(trajectories consumed when the windowed success rate first reaches bar, reached); censored at the total."""
    for i in range(window - 1, len(curve.success)):
        if curve.success[i - window + 1 : i + 1].mean() >= bar:
            return int(curve.trajectories[i]), True
    return int(curve.trajectories[-1]), False


def shown(n: int, reached: bool) -> str:
    return str(n) if reached else f">{n}"


def row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def report(curves: list[Curve], bar: float, window: int) -> None:
    """Markdown tables: per run, then per seed the ratio pa/grpo, then per arm."""
    print(f"\nbar: success rate >= {bar} averaged over {window} consecutive iterations\n")
    print(
        row(
            "arm",
            "seed",
            "success rate per iteration",
            "outcome mean per iteration",
            "trajectories to bar",
            "wall s",
            "s/iteration",
        )
    )
    print(row(*["---"] * 7))
    hits = {}
    for c in curves:
        hits[c.arm, c.seed] = trajectories_to_bar(c, bar, window)
        rates = " ".join(f"{s:.2f}" for s in c.success)
        outcomes = " ".join(f"{o:.2f}" for o in c.outcome)
        hit = shown(*hits[c.arm, c.seed])
        print(row(c.arm, c.seed, rates, outcomes, hit, f"{c.wall_s:.0f}", f"{c.iteration_s:.0f}"))
    seeds = sorted({c.seed for c in curves if ("grpo", c.seed) in hits and ("pa", c.seed) in hits})
    if seeds:
        print("\n" + row("seed", "grpo", "pa", "pa / grpo") + "\n" + row(*["---"] * 4))
        for seed in seeds:
            (g, g_ok), (p, p_ok) = hits["grpo", seed], hits["pa", seed]
            censored = "" if g_ok and p_ok else " (censored)"
            print(row(seed, shown(g, g_ok), shown(p, p_ok), f"{p / g:.2f}{censored}"))
        mean_g = np.mean([hits["grpo", s][0] for s in seeds])
        mean_p = np.mean([hits["pa", s][0] for s in seeds])
        print(row("mean", f"{mean_g:.1f}", f"{mean_p:.1f}", f"**{mean_p / mean_g:.2f}**"))
    print(
        "\n"
        + row(
            "arm", "runs", "reached the bar", "wall s (mean)", "s/iteration (median)", "final success", "final outcome"
        )
    )
    print(row(*["---"] * 7))
    for arm in dict.fromkeys(c.arm for c in curves):
        mine = [c for c in curves if c.arm == arm]
        reached = sum(hits[c.arm, c.seed][1] for c in mine)
        wall = np.mean([c.wall_s for c in mine])
        iteration = np.median([c.iteration_s for c in mine])
        final_s = np.mean([c.success[-1] for c in mine])
        final_o = np.mean([c.outcome[-1] for c in mine])
        print(
            row(
                arm,
                len(mine),
                f"{reached}/{len(mine)}",
                f"{wall:.0f}",
                f"{iteration:.0f}",
                f"{final_s:.3f}",
                f"{final_o:.3f}",
            )
        )


def plot(curves: list[Curve], path: Path, title: str, bar: float) -> None:
    """Success rate and outcome mean vs trajectories: one thin line per seed, the mean over seeds thick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = {"grpo": "tab:blue", "pa": "tab:orange"}
    for ax, field, label in [(axes[0], "success", "success rate"), (axes[1], "outcome", "outcome mean")]:
        for arm in dict.fromkeys(c.arm for c in curves):
            mine = [c for c in curves if c.arm == arm]
            for c in mine:
                ax.plot(c.trajectories, getattr(c, field), color=colors.get(arm), alpha=0.3, linewidth=1)
            n = min(len(c.trajectories) for c in mine)
            mean = np.mean([getattr(c, field)[:n] for c in mine], axis=0)
            ax.plot(mine[0].trajectories[:n], mean, color=colors.get(arm), linewidth=2.5, label=f"{arm} (mean)")
        ax.set_xlabel("trajectories")
        ax.set_ylabel(label)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].axhline(bar, color="gray", linestyle="--", linewidth=1, label=f"bar {bar}")
    axes[0].legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    print(f"\nlearning curves: {path}")


def main() -> int:
    here = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="corridor", help="env.name of every run")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/learning"), help="run directories: OUT/ARM-seedN")
    parser.add_argument("--repo", type=Path, default=here, help="the code that trains (default: this repository)")
    parser.add_argument("--bar", type=float, default=0.5, help="success rate the windowed mean must reach")
    parser.add_argument("--window", type=int, default=2, help="iterations averaged for the bar")
    parser.add_argument("--plot", type=Path, help="PNG of the learning curves (default: none)")
    parser.add_argument("--read-only", action="store_true", help="report on existing runs, train nothing")
    parser.add_argument("extra", nargs="*", help="dotted.key=value overrides for every run")
    args = parser.parse_args()
    if args.window < 1:
        parser.error(f"--window must be at least 1, got {args.window}")
    repo, out = args.repo.resolve(), args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    common = [f"env.name={args.env}", *args.extra]
    runs = [(arm, seed) for arm in args.arms for seed in args.seeds]
    if not args.read_only:
        total = num_iterations(repo, common)
        todo = [(a, s) for a, s in runs if not finished(out / f"{a}-seed{s}", total)]
        if todo:
            check_imports(repo)
        for arm, seed in todo:
            train(repo, out / f"{arm}-seed{seed}", [*common, f"seed={seed}", *ARMS[arm]])
    curves = [read_run(out / f"{arm}-seed{seed}", arm, seed) for arm, seed in runs]
    report(curves, args.bar, args.window)
    if args.plot:
        plot(curves, args.plot, f"{args.env}: outcome-only GRPO vs GRPO + progress advantage", args.bar)
    return 0


if __name__ == "__main__":
    sys.exit(main())
