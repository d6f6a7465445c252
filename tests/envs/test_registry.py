"""Env names from outside the repo: `module:Class`, entry points of installed distributions, and their errors."""

import subprocess
import sys
from pathlib import Path

import pytest

from envs import EnvSpecError, available, make_env, resolve_env
from envs.registry import load_object

USER_ENVS = Path(__file__).resolve().parents[1] / "fixtures" / "user_envs"
FREELUNCH = Path(sys.executable).parent / "freelunch"


@pytest.fixture
def user_envs(monkeypatch):
    monkeypatch.syspath_prepend(str(USER_ENVS))
    for module in ("guess", "broken_envs", "broken_import"):
        monkeypatch.delitem(sys.modules, module, raising=False)


def test_module_class_is_built_like_a_builtin(user_envs):
    env = make_env("guess:Guess", seed=3, max_steps=2, num_tasks=5, top=4)
    assert (env.max_steps, env.num_tasks, env.top) == (2, 5, 4)
    tasks = env.tasks("train")
    assert len(tasks) == 5 and not {t.task_id for t in tasks} & {t.task_id for t in env.tasks("eval")}
    assert env.reset(tasks[0]).startswith("I think of a number from 1 to 4")


def test_each_kind_of_bad_name_says_what_it_found(user_envs):
    with pytest.raises(EnvSpecError, match=r"module 'broken_import' does not import: ModuleNotFoundError: .*"
                       "freelunch_no_such_dependency"):  # fmt: skip
        resolve_env("broken_import:Env")
    with pytest.raises(EnvSpecError, match=r"class NoStep lacks the env protocol's step\(\)"):
        resolve_env("broken_envs:NoStep")
    with pytest.raises(EnvSpecError, match=r"broken_envs.py has no attribute 'Missing'"):
        resolve_env("broken_envs:Missing")
    with pytest.raises(EnvSpecError, match=r"env 'os:sep' is a str, not an env class or factory"):
        resolve_env("os:sep")
    with pytest.raises(EnvSpecError, match=r"unknown env 'myenv'; available: corridor, mdp.*Registered entry points: "
                       r"none .*'module:Class'"):  # fmt: skip
        resolve_env("myenv")
    with pytest.raises(EnvSpecError, match=r"reward function ':f' must be 'module:name'"):
        load_object(":f", "reward function")


def installed_distribution(site: Path, entry_points: str) -> None:
    """A tiny installed distribution in `site`, as pip leaves one: its module and a dist-info with entry points."""
    info = site / "freelunch_guess-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "guess.py").write_text((USER_ENVS / "guess.py").read_text())
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: freelunch-guess\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)


def test_an_installed_distribution_registers_a_short_name(tmp_path):
    installed_distribution(tmp_path, "[freelunch.envs]\nguess = guess:Guess\nbroken = guess:NoSuchClass\n")
    probe = (
        "import envs; print(envs.available()[-2:]); env = envs.make_env('guess', max_steps=2, num_tasks=3); "
        "print(type(env).__name__, len(env.tasks('train')));\n"
        "try: envs.make_env('broken')\nexcept envs.EnvSpecError as e: print(e)\n"
        "try: envs.make_env('other')\nexcept envs.EnvSpecError as e: print(str(e).split('. ')[-2])"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], env={"PYTHONPATH": str(tmp_path)}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "['broken', 'guess']",
        "Guess 3",
        "env 'broken' is registered in 'freelunch.envs' as 'guess:NoSuchClass', which does not load: "
        "AttributeError: module 'guess' has no attribute 'NoSuchClass'",
        "Registered entry points: broken, guess",
    ]


def test_env_check_on_an_installed_name(tmp_path):
    installed_distribution(tmp_path / "site", "[freelunch.envs]\nguess = guess:Guess\n")
    done = subprocess.run(
        [str(FREELUNCH), "env", "check", "guess", "--episodes", "4", "env.max_steps=3"],
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok  replay: the same 4 episodes again in a fresh process, identical" in done.stdout


def test_available_lists_builtins_first():
    names = available()
    assert names[:2] == ["corridor", "mdp"] and "tools" in names
