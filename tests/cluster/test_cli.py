"""What `freelunch` says before anything starts when the environment cannot run it."""

import os
import subprocess
import sys
from pathlib import Path

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
