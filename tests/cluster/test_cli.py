"""What `freelunch` says before anything starts when the environment cannot run it."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.cli import Stop, stop_within

REPO = Path(__file__).resolve().parents[2]


def test_a_torchvision_that_does_not_import_is_named_with_the_fix(tmp_path):
    """PyPI's CUDA torchvision next to the CPU torch fails on import; transformers would then fail to load any
    model deep inside a Ray actor. The CLI says so at once, with the command that fixes it."""
    package = tmp_path / "torchvision"
    package.mkdir()
    (package / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    for command in (["train", "cluster/configs/cpu_smoke.toml"], ["eval", "--policy", "x", "--env", "corridor"]):
        out = subprocess.run(
            [sys.executable, "-m", "cluster.cli", *command], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert out.returncode == 2, out.stderr
        assert "operator torchvision::nms does not exist" in out.stderr
        assert "pip uninstall -y torchvision torchaudio torchcodec" in out.stderr
        assert "Ray" not in out.stdout  # nothing was started


def test_a_run_directory_that_holds_a_run_is_refused_and_left_as_it_is(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"iteration": 0}\n')
    (run_dir / "config.toml").write_text("num_iterations = 3\n")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    out = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "train", "cluster/configs/cpu_smoke.toml", "--run-dir", str(run_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr
    assert f"{run_dir} already holds a run (config.toml, metrics.jsonl)" in out.stderr
    assert f"freelunch train --resume {run_dir}" in out.stderr
    assert "Ray" not in out.stdout  # nothing was started
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_an_empty_or_missing_run_directory_holds_no_run(tmp_path):
    from cluster.cli import run_files

    assert run_files(tmp_path / "missing") == [] and run_files(tmp_path) == []
    (tmp_path / "checkpoints").mkdir()
    assert run_files(tmp_path) == ["checkpoints"]


def test_a_stop_raised_inside_ray_is_still_a_stop():
    """Ray checks for signals inside ray.get; a Stop raised there arrives as the SystemError of its C call."""

    def ray_get():
        try:
            raise Stop(signal.SIGTERM)
        except Stop as stop:
            raise SystemError("<built-in method __new__> returned a result with an exception set") from stop

    with pytest.raises(SystemError) as caught:
        ray_get()
    assert stop_within(caught.value).signum == signal.SIGTERM
    assert stop_within(RuntimeError("a role died")) is None
