"""[plumbing] Metrics of each iteration: metrics.jsonl, one progress line on stdout, Ray metric gauges, trackers.

metrics.jsonl has a line per iteration and one per evaluation during training (its keys start with `eval/`;
its iteration is the number of iterations the evaluated policy was trained for). Each line also goes to the
run's experiment trackers (cluster/trackers.py) with its iteration as the step.

Gauges are named `freelunch_<phase>_<name>` (Ray's Prometheus export adds its `ray_` prefix), so a run
is visible on the cluster's metrics endpoint and in the dashboard's Grafana panels. A key measured per actor
(`rollout/engine_tokens_per_s@rollout-0`) is one gauge with an `actor` tag.
"""

import json
import re
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from cluster.files import write_atomically

if TYPE_CHECKING:
    from cluster.trackers import Trackers  # which reads metrics.jsonl through this file


@contextmanager
def timer(times: dict[str, float], key: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        times[key] = time.perf_counter() - start


class MetricsLog:
    def __init__(self, run_dir: Path, num_iterations: int, trackers: "Trackers"):
        import ray

        self.path = run_dir / "metrics.jsonl"
        self.num_iterations = num_iterations
        self.trackers = trackers
        # Gauges set in the driver process are not exported by Ray; an actor's are.
        self._exporter = (
            ray.remote(MetricsExporter).options(name="metrics", namespace="freelunch", num_cpus=0).remote(run_dir.name)
        )

    def write(self, metrics: dict[str, float]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({k: (None if v != v else v) for k, v in metrics.items()}) + "\n")  # NaN -> null
        # One write call: Ray's log thread prints actor lines to the same stdout, and print() writes
        # the text and its newline separately, which lets them interleave mid-line.
        line = (
            eval_line(metrics, self.num_iterations)
            if is_evaluation(metrics)
            else progress_line(metrics, self.num_iterations)
        )
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        self._exporter.set.remote(metrics)
        self.trackers.log(metrics)

    def forget_from(self, iteration: int) -> None:
        forget_from(self.path, iteration)

    def close(self) -> None:
        import ray

        self.trackers.close()
        # Ray exports gauges every few seconds: give the last iteration's values one export before stopping.
        time.sleep(EXPORT_S)
        ray.kill(self._exporter)


class MetricsExporter:
    """Holds one Ray gauge per metric key and sets it to the latest value, tagged with the role that measured
    it and the run (its directory's name), so runs sharing a cluster stay apart. Ray exports a gauge's value
    for only about 20 s after it was set (measured on Ray 2.60) and an iteration often takes longer, so a
    thread sets every gauge again every `refresh_s`: a run's series stay continuous between iterations."""

    def __init__(self, run: str = "", refresh_s: float = 5.0):
        self.run = run
        self._gauges: dict = {}
        self._latest: dict[str, tuple[float, dict]] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._refresh, args=(refresh_s,), daemon=True).start()

    def set(self, metrics: dict[str, float]) -> None:
        from ray.util.metrics import Gauge

        with self._lock:
            for key, value in metrics.items():
                if not isinstance(value, (int, float)) or value != value:
                    continue
                name = gauge_name(key)
                if name not in self._gauges:
                    tag_keys = ("role", "run", "actor")
                    self._gauges[name] = Gauge(name, description=f"freelunch metric {key}", tag_keys=tag_keys)
                tags = {"role": ROLE_OF_PHASE.get(key.split("/")[0], "driver"), "run": self.run, "actor": actor_of(key)}
                self._latest[key] = (float(value), tags)
                self._gauges[name].set(float(value), tags=tags)

    def _refresh(self, refresh_s: float) -> None:
        while True:
            time.sleep(refresh_s)
            with self._lock:
                for key, (value, tags) in self._latest.items():
                    self._gauges[gauge_name(key)].set(value, tags=tags)


# Which role measured a metric, by its phase (the key's prefix); iteration and policy_version are the driver's.
ROLE_OF_PHASE = {
    "rollout": "rollout",
    "score": "scorer",
    "loss": "learner",
    "time": "driver",
    "system": "cluster",
    "eval": "rollout",
}


EXPORT_S = 6.0  # longer than Ray's metrics report interval (5 s)


def gauge_name(key: str) -> str:
    """`phase/name[@actor]` -> the Ray gauge `freelunch_phase_name` (Prometheus: `ray_freelunch_phase_name`)."""
    return "freelunch_" + re.sub(r"[^a-zA-Z0-9_]", "_", key.partition("@")[0])


def actor_of(key: str) -> str:
    """The actor a per-actor key (`phase/name@rollout-0`) measured; "" for the run's own metrics."""
    return key.partition("@")[2]


def forget_from(path: Path, iteration: int) -> None:
    """Drop the lines of the iterations a resumed run redoes (>= iteration) from metrics.jsonl, atomically. The
    evaluation of the policy it resumes from (its iteration == iteration) stays: it is not redone."""

    def kept(metrics: dict) -> bool:
        return metrics["iteration"] < iteration or (is_evaluation(metrics) and metrics["iteration"] == iteration)

    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if kept(json.loads(line))]
    write_atomically(path, "".join(line + "\n" for line in lines))


def read_lines(path: Path) -> list[dict]:
    """The lines of a run's metrics.jsonl, in order; [] before the first is written."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def is_evaluation(metrics: dict) -> bool:
    """Whether a metrics line is an evaluation's (during training) rather than an iteration's."""
    return "eval/success_rate" in metrics


def eval_line(m: dict[str, float], num_iterations: int) -> str:
    return (
        f"eval after {m['iteration']}/{num_iterations} iterations | success {m['eval/success_rate']:.3f} "
        f"95% [{m['eval/success_interval_low']:.3f}, {m['eval/success_interval_high']:.3f}] over "
        f"{m['eval/num_trajectories']} tasks | outcome {m['eval/outcome_mean']:.3f} | steps {m['eval/steps_mean']:.2f}"
        f" | {m['eval/time_s']:.1f}s"
    )


def progress_line(m: dict[str, float], num_iterations: int) -> str:
    """One line per iteration. tok/s is the engines' generation rate (the sum of each engine's sampled tokens
    per second of stepping); `rollout/sustained_tokens_per_s` is the loop's throughput, a different figure."""
    engines = [value for key, value in m.items() if key.startswith("rollout/engine_tokens_per_s@")]
    generation = f"{sum(engines):.0f}" if engines else "-"
    return (
        f"iteration {m['iteration'] + 1}/{num_iterations} | outcome {m['rollout/outcome_mean']:.3f}"
        f" | progress_adv {m['score/progress_adv_mean']:+.4f} | kl {m['loss/kl']:.5f}"
        f" | {generation} tok/s | collect {m['time/collect']:.1f}s score {m['time/score']:.1f}s"
        f" update {m['time/update']:.1f}s broadcast {m['time/broadcast']:.2f}s | {m['time/iteration']:.1f}s"
    )
