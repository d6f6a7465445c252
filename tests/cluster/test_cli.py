"""`freelunch train` rejects bad input before any actor starts, naming what is wrong."""

import pytest

from cluster.cli import main
from cluster.config import load


def test_unknown_key_fails_before_anything_starts(capsys):
    assert main(["train", "learner.lrr=1e-5"]) == 2
    err = capsys.readouterr().err
    assert "learner.lrr" in err and "valid keys" in err


def test_wrong_type_names_key_and_expected_type(capsys):
    assert main(["train", "learner.batch_size=many"]) == 2
    assert "learner.batch_size: expected int" in capsys.readouterr().err


def test_missing_config_file_names_the_path(capsys, tmp_path):
    assert main(["train", str(tmp_path / "nope.toml")]) == 2
    assert str(tmp_path / "nope.toml") in capsys.readouterr().err


def test_missing_model_directory_names_the_path(capsys, tmp_path):
    missing = tmp_path / "no-such-model"
    assert main(["train", f"learner.model={missing}", "--run-dir", str(tmp_path / "run")]) == 2
    assert f"model directory {missing}" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing was started or written


def test_dry_run_prints_the_resolved_config(capsys, tmp_path):
    assert main(["train", "cluster/configs/cpu_smoke.toml", "learner.lr=3e-05", "--dry-run"]) == 0
    out = capsys.readouterr().out
    (tmp_path / "resolved.toml").write_text(out)
    cfg = load(str(tmp_path / "resolved.toml"))
    assert cfg.learner.lr == 3e-05 and cfg.learner.model == "tiny-random" and cfg.num_iterations == 2


@pytest.mark.parametrize("argv", [["train", "--help"], ["--help"]])
def test_help_exits_cleanly(argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0


def test_a_taken_dashboard_port_is_named_before_ray_starts(capsys, tiny_model_dir):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["train", "learner.model=tiny-random", f"cluster.dashboard_port={port}"])
    assert code == 2
    assert f"cluster.dashboard_port {port} is taken on 127.0.0.1" in capsys.readouterr().err
