"""[plumbing] Experiment trackers of a run: TensorBoard, MLflow and W&B, each behind the pip extra of its name.

Every metric line goes to each tracker under its own name with the iteration as the step, and the resolved
config, flattened to dotted keys, is logged as hyperparameters; the run directory's name is the run name.
The ids of the trackers' runs are kept in trackers.json, so a resumed run continues them instead of starting
new ones. A tracker that fails is reported by name and dropped: it never stops a run. The tracker packages
are imported only when their tracker starts.
"""

import importlib.util
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlparse

from cluster.files import write_atomically
from cluster.log import is_evaluation, read_lines

# Tracker name -> the module its pip extra (of the same name) brings.
TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}

IDS = "trackers.json"


def missing_packages(names: Sequence[str]) -> str | None:
    """None when every named tracker's package is installed, else one message naming the missing ones with
    the pip command that installs them; it is checked before a run prepares anything."""
    unknown = [name for name in names if name not in TRACKERS]
    missing = [name for name in names if name in TRACKERS and importlib.util.find_spec(TRACKERS[name]) is None]
    problems = [f"unknown tracker {name!r} (trackers are {', '.join(TRACKERS)})" for name in unknown]
    if missing:
        needs = "needs its package" if len(missing) == 1 else "need their packages"
        problems.append(f"{', '.join(missing)} {needs}: pip install 'freelunch[{','.join(missing)}]'")
    return "cluster.trackers: " + "; ".join(problems) if problems else None


def flatten(config: dict, prefix: str = "") -> dict:
    """Nested sections -> dotted keys ("learner.lr"); an empty section stays a value ({})."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def render(value) -> str:
    """A config value as text: a string as it is, anything else as TOML writes it (true, [1, 2])."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def scalars(metrics: dict) -> dict[str, float]:
    """The values a tracker can plot: every number but the iteration (a bool as 0/1); None and NaN, which
    metrics.jsonl holds as null, and text are left out."""
    return {
        key: float(value)
        for key, value in metrics.items()
        if key != "iteration" and isinstance(value, (int, float)) and value == value
    }


def metric_name(key: str) -> str:
    """A metric's or parameter's MLflow name. MLflow takes only alphanumerics and `_ - . / :` and spaces:
    a per-actor key's `@actor` becomes `.actor` (`rollout/engine_tokens_per_s.rollout-0`), any other
    character `_`. TensorBoard and W&B keep the key as it is."""
    return re.sub(r"[^\w\-./: ]", "_", key.replace("@", "."))


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


class Trackers:
    """The trackers named in cluster.trackers, started on a run directory; start_iteration > 0 resumes them."""

    def __init__(self, names: Sequence[str], run_dir: Path, config: dict, start_iteration: int = 0):
        path = run_dir / IDS
        ids = json.loads(path.read_text()) if path.exists() else {}
        flat = flatten(config)
        self._trackers = {}
        for name in names:
            try:
                tracker = _CLASSES[name](run_dir, flat, start_iteration, ids.get(name, {}))
            except Exception as error:
                print(
                    f"freelunch: tracker {name} did not start ({_one_line(error)}); the run goes on without it",
                    file=sys.stderr,
                )
                continue
            self._trackers[name] = tracker
            ids[name] = tracker.ids
        if self._trackers:
            write_atomically(path, json.dumps(ids, indent=2) + "\n")

    def log(self, metrics: dict) -> None:
        step, values = int(metrics["iteration"]), scalars(metrics)
        for name, tracker in list(self._trackers.items()):
            try:
                tracker.log(step, values)
            except Exception as error:
                del self._trackers[name]
                print(
                    f"freelunch: tracker {name} failed at iteration {step} ({_one_line(error)}); the run goes on"
                    " without it",
                    file=sys.stderr,
                )

    def close(self) -> None:
        trackers, self._trackers = self._trackers, {}
        for name, tracker in trackers.items():
            try:
                tracker.close()
            except Exception as error:
                print(f"freelunch: tracker {name} did not close ({_one_line(error)})", file=sys.stderr)


class _TensorBoard:
    """Event files in tensorboard/, flushed every iteration so a running job is visible. A resumed run writes
    into the same directory from `purge_step`: TensorBoard then drops what the first part logged at the
    iterations the resumed one redoes, the evaluation at purge_step too, which the resumed run keeps in
    metrics.jsonl and does not redo: it is written again. The config is a text summary and the run's hparams
    (a session of its own directory, not a sub-run)."""

    def __init__(self, run_dir: Path, config: dict, start_iteration: int, ids: dict):
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.ids = {"log_dir": "tensorboard"}
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_iteration)
        text = "\n".join(f"    {key} = {json.dumps(value, default=str)}" for key, value in config.items())
        self.writer.add_text("config", text, global_step=start_iteration)  # indented: markdown shows it verbatim
        values = {
            key: value if isinstance(value, (int, float, str)) else render(value) for key, value in config.items()
        }
        _, session_start, _ = hparams(values, {})
        self.writer.file_writer.add_summary(session_start, start_iteration)
        for kept in _kept_evaluations(run_dir, start_iteration):
            self.log(start_iteration, scalars(kept))
        self.writer.flush()

    def log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _kept_evaluations(run_dir: Path, iteration: int) -> list[dict]:
    """The evaluation lines of metrics.jsonl at `iteration` (the one a resumed run keeps at its start)."""
    if not iteration:
        return []
    return [m for m in read_lines(run_dir / "metrics.jsonl") if m["iteration"] == iteration and is_evaluation(m)]


class _MLflow:
    """A run in the MLflow experiment MLFLOW_EXPERIMENT_NAME ("freelunch") at MLFLOW_TRACKING_URI, or without
    it in a SQLite store in the run directory (mlflow.db; MLflow 3 refuses new file stores). MlflowClient,
    not mlflow's active-run globals, so nothing else in the process shares its state. A resumed run continues
    the run of trackers.json while the store has it; MLflow params cannot change, so it adds only new ones."""

    def __init__(self, run_dir: Path, config: dict, start_iteration: int, ids: dict):
        from mlflow import MlflowClient
        from mlflow.entities import Param

        # MLflow retries an unreachable server for minutes by default; a user's own settings win.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        local = not os.environ.get("MLFLOW_TRACKING_URI")
        uri = f"sqlite:///{(run_dir / 'mlflow.db').resolve()}" if local else os.environ["MLFLOW_TRACKING_URI"]
        if urlparse(uri).scheme in ("", "file"):  # a file store the user asked for: MLflow 3 wants an opt-in
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        run = self._existing_run(ids.get("run_id"))
        if run:
            self.client.update_run(run.info.run_id, status="RUNNING")
        else:
            run = self.client.create_run(self._experiment_id(run_dir, local), run_name=run_dir.name)
        self.run_id = run.info.run_id
        self.ids = {"run_id": self.run_id, "tracking_uri": uri}
        # MLflow's limits: 100 params a batch, 6000 characters a value.
        params = [Param(metric_name(key), render(value)[:6000]) for key, value in config.items()]
        for batch in _batches([p for p in params if p.key not in run.data.params], 100):
            self.client.log_batch(self.run_id, params=batch)

    def _existing_run(self, run_id: str | None):
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

        if not run_id:
            return None
        try:
            return self.client.get_run(run_id)
        except MlflowException as error:
            if error.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                raise
            return None  # another store than the first part's: a new run there

    def _experiment_id(self, run_dir: Path, local: bool) -> str:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "freelunch")
        if experiment := self.client.get_experiment_by_name(name):
            return experiment.experiment_id
        # The local store's artifacts beside it, not in the working directory; a server has its own place.
        return self.client.create_experiment(
            name, artifact_location=(run_dir.resolve() / "mlartifacts").as_uri() if local else None
        )

    def log(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        metrics = [Metric(metric_name(key), value, now_ms, step) for key, value in values.items()]
        for batch in _batches(metrics, 1000):  # MLflow's limit a batch
            self.client.log_batch(self.run_id, metrics=batch)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class _WandB:
    """A W&B run in WANDB_PROJECT ("freelunch"), under run_dir/wandb/. Online only when the user has logged in
    (WANDB_API_KEY, ~/.netrc) or set WANDB_MODE: otherwise offline (run_dir/wandb/offline-run-*, for
    `wandb sync`), so a run never waits on a login prompt. The driver's stdout is left alone (console off).
    A resumed run continues the W&B run of trackers.json; W&B ignores steps below its last one, so an
    iteration the resumed run redoes keeps the first part's values there."""

    def __init__(self, run_dir: Path, config: dict, start_iteration: int, ids: dict):
        import wandb

        self.run = wandb.init(
            dir=run_dir,
            project=os.environ.get("WANDB_PROJECT", "freelunch"),
            name=run_dir.name,
            id=ids.get("id"),
            resume="allow",
            config=config,
            mode=_wandb_mode(wandb),
            reinit="create_new",
            settings=wandb.Settings(console="off"),
        )
        self.ids = {"id": self.run.id}

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        import wandb

        self.run.finish()
        # finish() can return before W&B's service process has written the run file; tearing the service down
        # waits for it, so the offline run is complete on disk when the run's driver goes on or exits.
        wandb.teardown()


def _wandb_mode(wandb) -> str | None:
    """None (W&B's own) when the user chose a mode (WANDB_MODE, `wandb offline`); else online when W&B's lookup
    finds their credentials (WANDB_API_KEY, ~/.netrc), else offline. The lookup neither prompts nor asks the
    server, which wandb.login does to greet the user by name."""
    from wandb.sdk.lib import wbauth

    settings = wandb.setup().settings
    if settings.mode != "online":
        return None
    found = wbauth.authenticate_session(host=settings.base_url, source="freelunch", prompt=False, update_session=False)
    return "online" if found else "offline"


_CLASSES = {"tensorboard": _TensorBoard, "mlflow": _MLflow, "wandb": _WandB}


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
