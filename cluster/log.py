"""[plumbing] Metrics of each iteration: metrics.jsonl, one progress line on stdout, Ray metric gauges.

Gauges are named `freelunch_<phase>_<name>` (Ray's Prometheus export adds its `ray_` prefix), so a run
is visible on the cluster's metrics endpoint and in the dashboard's Grafana panels.
"""

import json
import re
import time
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def timer(times: dict[str, float], key: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        times[key] = time.perf_counter() - start


class MetricsLog:
    def __init__(self, run_dir: Path, num_iterations: int):
        self.path = run_dir / "metrics.jsonl"
        self.num_iterations = num_iterations
        self._gauges: dict = {}

    def write(self, metrics: dict[str, float]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({k: (None if v != v else v) for k, v in metrics.items()}) + "\n")  # NaN -> null
        print(progress_line(metrics, self.num_iterations), flush=True)
        self._export(metrics)

    def _export(self, metrics: dict[str, float]) -> None:
        from ray.util.metrics import Gauge

        for key, value in metrics.items():
            if not isinstance(value, (int, float)) or value != value:
                continue
            name = "freelunch_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)
            if name not in self._gauges:
                self._gauges[name] = Gauge(name, description=f"freelunch metric {key}")
            self._gauges[name].set(float(value))


def progress_line(m: dict[str, float], num_iterations: int) -> str:
    return (
        f"iteration {m['iteration'] + 1}/{num_iterations} | outcome {m['rollout/outcome_mean']:.3f}"
        f" | progress_adv {m['score/progress_adv_mean']:+.4f} | kl {m['loss/kl']:.5f}"
        f" | {m['rollout/tokens_per_s']:.0f} tok/s | collect {m['time/collect']:.1f}s score {m['time/score']:.1f}s"
        f" update {m['time/update']:.1f}s broadcast {m['time/broadcast']:.2f}s | {m['time/iteration']:.1f}s"
    )
