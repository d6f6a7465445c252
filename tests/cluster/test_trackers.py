"""cluster.trackers, read back with each tracker's own reader: TensorBoard's EventAccumulator, MlflowClient on the
local store and on a real `mlflow server` on loopback, and the records of W&B's offline run file (W&B's protobuf).
W&B stays offline and nothing leaves the machine."""

import importlib.util
import json
import math
import struct
import sys
import time
from pathlib import Path

import pytest

from cluster.trackers import TRACKERS, Trackers, flatten, metric_name, missing_packages, render, scalars
from learner.learner import free_port

BIN = Path(sys.executable).parent

CONFIG = {
    "num_iterations": 3,
    "seed": 7,
    "learner": {"model": "tiny-random", "lr": 1e-5, "num_learners": 2, "gradient_checkpointing": True},
    "env": {"name": "corridor", "options": {}},
    "cluster": {"trackers": ["tensorboard", "mlflow"]},
}
PARAMS = {  # CONFIG as MLflow params
    "num_iterations": "3",
    "seed": "7",
    "learner.model": "tiny-random",
    "learner.lr": "1e-05",
    "learner.num_learners": "2",
    "learner.gradient_checkpointing": "true",
    "env.name": "corridor",
    "env.options": "{}",
    "cluster.trackers": '["tensorboard", "mlflow"]',
}


def line(iteration: int, shift: float = 0.0) -> dict:
    """A metrics.jsonl line: a per-actor key, a None (NaN in metrics.jsonl), a NaN, a text and a bool."""
    return {
        "iteration": iteration,
        "policy_version": iteration + 1,
        "rollout/outcome_mean": 0.25 * iteration + shift,
        "rollout/engine_tokens_per_s@rollout-0": 1000.5 + iteration,
        "rollout/finish_stop": 0.75,
        "loss/kl": 1e-4 * (iteration + 1) + shift,
        "loss/grad_norm": math.nan if iteration == 1 else 0.5,
        "score/progress_adv_mean": None if iteration == 2 else -0.01 * iteration,
        "system/all_alive": True,
        "env/name": "corridor",
        "time/iteration": 3.25 + iteration,
    }


def expected(lines: list[dict]) -> dict[str, dict[int, float]]:
    """key -> {iteration: value} of every number but the iteration; a later line at the same step wins."""
    by_key: dict[str, dict[int, float]] = {}
    for metrics in lines:
        for key, value in metrics.items():
            if key != "iteration" and isinstance(value, (int, float)) and not math.isnan(value):
                by_key.setdefault(key, {})[metrics["iteration"]] = float(value)
    return by_key


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No user login, store or settings: MLflow's store is the run directory's, W&B is offline under a home of
    its own; WANDB_DIR points elsewhere, to show that the run directory wins."""
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT"):
        monkeypatch.delenv(key, raising=False)
    for key in ("WANDB_ENTITY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(key, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    for key in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(key, str(home / key.lower()))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    yield
    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()  # W&B's process-wide settings were read under this test's HOME


def run_dir_of(tmp_path: Path, name: str = "run-20260101-120000") -> Path:
    run_dir = tmp_path / name
    run_dir.mkdir()
    return run_dir


def log_all(names: list[str], run_dir: Path, lines: list[dict], start_iteration: int = 0) -> None:
    trackers = Trackers(names, run_dir, CONFIG, start_iteration=start_iteration)
    for metrics in lines:
        trackers.log(metrics)
    trackers.close()
    trackers.close()  # a second close does nothing


# --- readers ---


def tensorboard_scalars(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}, events


def mlflow_run(tracking_uri: str):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("freelunch").experiment_id])
    return client, run


def mlflow_history(client, run_id: str, key: str) -> dict[int, float]:
    """step -> value of a metric, each step once."""
    history = client.get_metric_history(run_id, metric_name(key))
    assert len({m.step for m in history}) == len(history), f"{key}: a step logged twice"
    return {m.step: m.value for m in history}


def wandb_records(path: Path) -> list:
    """The records of a .wandb file: a 7-byte header (":W&B", magic, version), then LevelDB-log blocks of 32 KiB
    whose chunks (crc, length, type; FULL = 1, FIRST, MIDDLE, LAST = 4) hold serialized `Record`s."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, block = path.read_bytes(), 32 * 1024
    assert data[:4] == b":W&B"
    records, pos, chunks = [], 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunks, pos = chunks + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            records.append(Record.FromString(chunks))
            chunks = b""
    return records


def wandb_offline_runs(run_dir: Path) -> list[tuple]:
    """(run record, {key: {step: value}}) of each offline run under run_dir/wandb, oldest first."""
    runs = []
    for directory in sorted((run_dir / "wandb").glob("offline-run-*")):
        (path,) = directory.glob("run-*.wandb")
        records = wandb_records(path)
        (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        history: dict[str, dict[int, float]] = {}
        for record in records:
            if record.WhichOneof("record_type") == "history":
                for item in record.history.item:
                    key = item.key or "/".join(item.nested_key)
                    if not key.startswith("_"):
                        history.setdefault(key, {})[record.history.step.num] = json.loads(item.value_json)
        runs.append((run, history))
    return runs


# --- tests ---


def test_missing_packages_names_each_tracker_with_its_extra(monkeypatch):
    find_spec = importlib.util.find_spec
    assert missing_packages([]) is None and missing_packages(list(TRACKERS)) is None  # the test install has them
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ("mlflow", "wandb") else find_spec(name, *a)
    )
    assert missing_packages(["tensorboard"]) is None
    assert missing_packages(["mlflow"]) == "cluster.trackers: mlflow needs its package: pip install 'freelunch[mlflow]'"
    assert missing_packages(["tensorboard", "mlflow", "wandb"]) == (
        "cluster.trackers: mlflow, wandb need their packages: pip install 'freelunch[mlflow,wandb]'"
    )
    assert missing_packages(["neptune", "wandb"]) == (
        "cluster.trackers: unknown tracker 'neptune' (trackers are tensorboard, mlflow, wandb);"
        " wandb needs its package: pip install 'freelunch[wandb]'"
    )


def test_what_goes_to_the_trackers_and_under_which_names():
    assert scalars(line(2)) == {
        "policy_version": 3.0,
        "rollout/outcome_mean": 0.5,
        "rollout/engine_tokens_per_s@rollout-0": 1002.5,
        "rollout/finish_stop": 0.75,
        "loss/kl": pytest.approx(3e-4),
        "loss/grad_norm": 0.5,
        "system/all_alive": 1.0,
        "time/iteration": 5.25,
    }
    assert "loss/grad_norm" not in scalars(line(1)) and "score/progress_adv_mean" in scalars(line(1))
    assert metric_name("rollout/engine_tokens_per_s@rollout-0") == "rollout/engine_tokens_per_s.rollout-0"
    assert metric_name("loss/kl") == "loss/kl" and metric_name("a-b_c.d/e f:g") == "a-b_c.d/e f:g"
    assert metric_name("rate(%)") == "rate___"
    assert {key: render(value) for key, value in flatten(CONFIG).items()} == PARAMS


def test_tensorboard_event_files_hold_every_metric_and_the_config(tmp_path):
    run_dir = run_dir_of(tmp_path)
    lines = [line(i) for i in range(3)]
    log_all(["tensorboard"], run_dir, lines)
    logged, events = tensorboard_scalars(run_dir)
    assert logged.keys() == expected(lines).keys()
    for key, by_step in expected(lines).items():
        assert logged[key] == pytest.approx(by_step, rel=1e-6), key  # float32 in the event files
    assert logged["loss/grad_norm"].keys() == {0, 2} and logged["score/progress_adv_mean"].keys() == {0, 1}
    (text,) = events.Tensors("config/text_summary")
    assert '    learner.model = "tiny-random"\n    learner.lr = 1e-05\n' in text.tensor_proto.string_val[0].decode()
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    (content,) = events.PluginTagToContent("hparams").values()
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["learner.lr"].number_value == 1e-5 and hparams["learner.model"].string_value == "tiny-random"
    assert hparams["cluster.trackers"].string_value == '["tensorboard", "mlflow"]'
    assert json.loads((run_dir / "trackers.json").read_text()) == {"tensorboard": {"log_dir": "tensorboard"}}


def check_mlflow_run(client, run, run_dir: Path, lines: list[dict]) -> None:
    assert run.info.run_name == run_dir.name and run.data.params == PARAMS
    assert run.data.metrics.keys() == {metric_name(key) for key in expected(lines)}
    for key, by_step in expected(lines).items():
        assert mlflow_history(client, run.info.run_id, key) == pytest.approx(by_step), key


def test_mlflow_local_store_in_the_run_directory(tmp_path):
    run_dir = run_dir_of(tmp_path)
    lines = [line(i) for i in range(3)]
    log_all(["mlflow"], run_dir, lines)
    ids = json.loads((run_dir / "trackers.json").read_text())["mlflow"]
    assert ids["tracking_uri"] == f"sqlite:///{run_dir.resolve() / 'mlflow.db'}"
    client, run = mlflow_run(ids["tracking_uri"])
    assert run.info.run_id == ids["run_id"] and run.info.status == "FINISHED"
    check_mlflow_run(client, run, run_dir, lines)
    assert client.get_experiment(run.info.experiment_id).artifact_location == (run_dir / "mlartifacts").as_uri()


@pytest.mark.slow
def test_mlflow_server_at_the_tracking_uri(tmp_path, monkeypatch, mlflow_server):
    run_dir, uri = run_dir_of(tmp_path), mlflow_server
    lines = [line(i) for i in range(3)]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    log_all(["mlflow"], run_dir, lines)
    client, run = mlflow_run(uri)
    assert run.info.status == "FINISHED"
    check_mlflow_run(client, run, run_dir, lines)
    assert json.loads((run_dir / "trackers.json").read_text()) == {
        "mlflow": {"run_id": run.info.run_id, "tracking_uri": uri}
    }
    assert not (run_dir / "mlflow.db").exists()


def test_wandb_offline_run_holds_the_metrics_and_the_config(tmp_path):
    run_dir = run_dir_of(tmp_path)
    lines = [line(i) for i in range(3)]
    log_all(["wandb"], run_dir, lines)
    ((run, history),) = wandb_offline_runs(run_dir)
    assert run.run_id == json.loads((run_dir / "trackers.json").read_text())["wandb"]["id"]
    assert run.display_name == run_dir.name and run.project == "freelunch"
    config = {item.key: json.loads(item.value_json) for item in run.config.update if item.key != "_wandb"}
    assert config == flatten(CONFIG)
    assert history.keys() == expected(lines).keys()  # W&B keeps the keys as they are
    for key, by_step in expected(lines).items():
        assert history[key] == pytest.approx(by_step), key
    assert not (tmp_path / "elsewhere").exists()


def test_wandb_goes_online_only_with_the_users_credentials(tmp_path, monkeypatch):
    """Decided by W&B's own lookup, which neither prompts nor asks the server (no W&B run starts here)."""
    import wandb

    from cluster.trackers import _wandb_mode

    assert _wandb_mode(wandb) == "offline"
    netrc = tmp_path / "home" / ".netrc"
    netrc.parent.mkdir(exist_ok=True)
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {'0' * 40}\n")
    netrc.chmod(0o600)
    start = time.monotonic()
    assert _wandb_mode(wandb) == "online" and time.monotonic() - start < 2  # no request that would time out
    wandb.teardown()  # forgets the credentials and the settings read under this environment
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert _wandb_mode(wandb) is None  # the user's choice: W&B goes by WANDB_MODE


def test_resume_continues_each_tracker_run(tmp_path):
    """Stopped after iteration 1, resumed at 2: the same MLflow and W&B runs, one TensorBoard log."""
    run_dir = run_dir_of(tmp_path)
    lines = [line(i) for i in range(4)]
    log_all(["tensorboard", "mlflow", "wandb"], run_dir, lines[:2])
    ids = json.loads((run_dir / "trackers.json").read_text())
    log_all(["tensorboard", "mlflow", "wandb"], run_dir, lines[2:], start_iteration=2)
    assert json.loads((run_dir / "trackers.json").read_text()) == ids
    client, run = mlflow_run(ids["mlflow"]["tracking_uri"])  # the only run
    assert run.info.run_id == ids["mlflow"]["run_id"] and run.info.status == "FINISHED"
    check_mlflow_run(client, run, run_dir, lines)
    first, second = wandb_offline_runs(run_dir)  # offline, each part is a directory of the same run
    assert first[0].run_id == second[0].run_id == ids["wandb"]["id"]
    assert first[1]["loss/kl"].keys() == {0, 1} and second[1]["loss/kl"].keys() == {2, 3}
    logged, _ = tensorboard_scalars(run_dir)
    for key, by_step in expected(lines).items():
        assert logged[key] == pytest.approx(by_step, rel=1e-6), key


def test_resumed_tensorboard_replaces_the_iterations_it_redoes(tmp_path):
    """Stopped after iteration 2 with a checkpoint at 1: the resumed run's iterations 1 and 2 replace the first's."""
    run_dir = run_dir_of(tmp_path)
    first, redone = [line(i) for i in range(3)], [line(i, shift=10.0) for i in (1, 2)]
    log_all(["tensorboard"], run_dir, first)
    log_all(["tensorboard"], run_dir, redone, start_iteration=1)
    logged, _ = tensorboard_scalars(run_dir)
    assert logged["loss/kl"] == pytest.approx(expected([first[0], *redone])["loss/kl"], rel=1e-6)
    assert logged["rollout/outcome_mean"] == pytest.approx({0: 0.0, 1: 10.25, 2: 10.5})


def test_a_tracker_that_does_not_start_is_named_and_the_others_log(tmp_path, monkeypatch, capsys):
    run_dir = run_dir_of(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    lines = [line(i) for i in range(2)]
    log_all(["mlflow", "tensorboard"], run_dir, lines)
    (report,) = [text for text in capsys.readouterr().err.splitlines() if text.startswith("freelunch:")]
    assert report.startswith("freelunch: tracker mlflow did not start (MlflowException: ")
    assert report.endswith("); the run goes on without it") and "Connection refused" in report
    assert tensorboard_scalars(run_dir)[0]["loss/kl"] == pytest.approx(expected(lines)["loss/kl"], rel=1e-6)
    assert json.loads((run_dir / "trackers.json").read_text()) == {"tensorboard": {"log_dir": "tensorboard"}}


def test_a_tracker_that_fails_while_logging_is_named_once_and_dropped(tmp_path, capsys):
    run_dir = run_dir_of(tmp_path)
    trackers = Trackers(["mlflow", "tensorboard"], run_dir, CONFIG)
    trackers.log(line(0))
    client, run = mlflow_run(json.loads((run_dir / "trackers.json").read_text())["mlflow"]["tracking_uri"])
    client.delete_run(run.info.run_id)  # MLflow refuses metrics for a deleted run
    for iteration in (1, 2):
        trackers.log(line(iteration))
    trackers.close()
    (report,) = [text for text in capsys.readouterr().err.splitlines() if text.startswith("freelunch:")]
    assert report.startswith("freelunch: tracker mlflow failed at iteration 1 (MlflowException: ")
    assert report.endswith("); the run goes on without it")
    assert tensorboard_scalars(run_dir)[0]["loss/kl"].keys() == {0, 1, 2}
    assert mlflow_history(client, run.info.run_id, "loss/kl") == pytest.approx({0: 1e-4})


def test_resumed_tensorboard_keeps_the_evaluation_of_the_checkpoint(tmp_path):
    """The evaluation after 2 iterations is kept by a resume from the checkpoint at 2 (metrics.jsonl keeps its line
    and it is not redone), though TensorBoard's purge from step 2 drops what the first part wrote there."""
    import json

    run_dir = run_dir_of(tmp_path)
    evaluation = {"iteration": 2, "policy_version": 2, "eval/success_rate": 0.375}
    first = [line(0), line(1), evaluation, line(2)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in first))
    log_all(["tensorboard"], run_dir, first)
    log_all(["tensorboard"], run_dir, [line(2, shift=10.0)], start_iteration=2)
    logged, _ = tensorboard_scalars(run_dir)
    assert logged["eval/success_rate"] == pytest.approx({2: 0.375})
    assert logged["rollout/outcome_mean"] == pytest.approx({0: 0.0, 1: 0.25, 2: 10.5})


def test_mlflow_file_store_the_user_asks_for(tmp_path, monkeypatch):
    """A file store at MLFLOW_TRACKING_URI (MLflow 3 asks for an opt-in to it; asking for it is the opt-in)."""
    run_dir = run_dir_of(tmp_path)
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    lines = [line(i) for i in range(3)]
    log_all(["mlflow"], run_dir, lines)
    client, run = mlflow_run(uri)
    assert run.info.status == "FINISHED"
    check_mlflow_run(client, run, run_dir, lines)
    assert (tmp_path / "mlruns" / run.info.experiment_id / run.info.run_id / "metrics").is_dir()
