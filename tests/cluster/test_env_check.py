"""`freelunch env check`: a good env passes every check; each kind of broken env fails naming its violation."""

import fnmatch
import subprocess
import sys
from pathlib import Path

import pytest

USER_ENVS = Path(__file__).resolve().parents[1] / "fixtures" / "user_envs"
FREELUNCH = Path(sys.executable).parent / "freelunch"


def env_check(*args: str) -> subprocess.CompletedProcess:
    """`freelunch env check ...` run from the folder holding the user's modules, as a user runs it."""
    return subprocess.run(
        [str(FREELUNCH), "env", "check", *args], cwd=USER_ENVS, capture_output=True, text=True, timeout=180
    )


def test_a_good_env_passes_every_check():
    done = env_check("guess:Guess", "--episodes", "6", "env.max_steps=3", "env.options.top=5")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[1:-1]] == [
        "ok  make",
        "ok  tasks",
        "ok  play",
        "ok  replay",
        "ok  latency",
    ]
    assert "ok  play: 6 episodes" in done.stdout and lines[-1] == "freelunch: env guess:Guess passed every check"


@pytest.mark.parametrize(
    ("name", "violation"),
    [
        ("broken_import:Env", "FAIL make: env 'broken_import:Env': module 'broken_import' does not import: "
         "ModuleNotFoundError: No module named 'freelunch_no_such_dependency'"),
        ("broken_envs:NoStep", "FAIL make: env 'broken_envs:NoStep': class NoStep lacks the env protocol's step()"),
        ("broken_envs:ShuffledTasks", "FAIL tasks: tasks('train') is not deterministic: a second call gives "
         "another list"),
        ("broken_envs:SharedSplits", "FAIL tasks: train and eval share 8 task ids, e.g. 't-0'"),
        ("broken_envs:NaNReward", "FAIL play: step 0 of t-0 (action *) failed: ValueError: step returned reward "
         "nan (float); reward must be a finite number"),
        ("broken_envs:NeverEnds", "FAIL play: t-0 did not end within max_steps=3: 4 steps taken"),
        ("broken_envs:Unreplayable", "FAIL replay: t-0 replayed with the same seed and actions: the first observation "
         "differs"),
    ],
)  # fmt: skip
def test_each_broken_env_fails_naming_its_violation(name, violation):
    done = env_check(name, "--episodes", "2", "env.max_steps=3", "env.num_tasks=8")
    assert done.returncode == 1, done.stdout + done.stderr
    assert fnmatch.fnmatchcase(done.stdout.splitlines()[-1], violation + "*"), done.stdout  # * : any action
    assert f"freelunch: env {name} violates the env protocol" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_bad_arguments_exit_2():
    done = env_check("guess:Guess", "actors.max_tokens=3")
    assert done.returncode == 2 and "env check takes seed and env.* settings" in done.stderr
