"""A user's own env class, from a folder of their own, through a real `freelunch train` of cpu_smoke (embedded Ray,
vLLM, DeepSpeed, env processes) and `freelunch eval` of the policy it wrote."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
FREELUNCH = Path(sys.executable).parent / "freelunch"


def test_train_and_eval_a_user_env_by_module_and_class(tmp_path):
    project = tmp_path / "project"  # the user's folder: their env module, and where they run freelunch
    project.mkdir()
    shutil.copy(REPO / "tests" / "fixtures" / "user_envs" / "guess.py", project)
    config = str(REPO / "cluster" / "configs" / "cpu_smoke.toml")
    trained = subprocess.run(
        [str(FREELUNCH), "train", config, "env.name=guess:Guess", "env.options.top=3", "--run-dir", "run"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    run = project / "run"
    assert [json.loads(line)["iteration"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [0, 1]
    for iteration in (0, 1):
        table = pq.read_table(run / "trajectories" / f"iteration_{iteration:05d}.parquet").to_pylist()
        assert len(table) == 8 and all(row["task_id"].startswith("guess-") for row in table)
        assert {row["finish_reason"] for row in table} <= {"done", "max_steps", "max_tokens"}  # no env failed

    evaluated = subprocess.run(
        [str(FREELUNCH), "eval", "--policy", "run/policy", "--env", "guess:Guess", "--num-tasks", "3", "--out", "ev"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    summary = json.loads((project / "ev" / "summary.json").read_text())
    assert summary["env"] == "guess:Guess" and summary["num_trajectories"] == 3
    played = pq.read_table(project / "ev" / "trajectories.parquet").column("task_id").to_pylist()
    assert played == [task.task_id for task in _eval_tasks(project)[:3]]


def _eval_tasks(project: Path):
    sys.path.insert(0, str(project))
    try:
        from guess import Guess

        return Guess(num_tasks=512).tasks("eval")
    finally:
        sys.path.remove(str(project))
