"""Any bytes an LLM may emit, played against every built-in env in a real env process: each step answers within
the step timeout with a well-formed StepResult (the worker checks it), and the env keeps going.

Before the adapters sanitised actions, "\\x00\\xff garbage" spun textworld's Z-machine at 100% CPU and never
returned; the env-process timeout ended the trajectory only after 30 s of a core.
"""

import asyncio
import importlib.util
import json
import random

import pytest

from envs import BUILTINS, SUITES
from envs.adapter import MAX_ACTION_CHARS, match_action, sanitised
from envs.base import Task
from envs.process import EnvProcess
from envs.textworld import frotz_command

STEP_TIMEOUT_S = 10.0  # every step of these envs takes well under a second; a spinning parser never answers
NASTY = [
    "\x00\xff garbage",
    "\x00" * 64,
    "",
    "\n\n\n",
    "\t\r\x0b\x0c\x1b[31mred\x1b[0m",
    "go north\x07\x08\x7f",
    "\udcff\udcfe lone surrogates",
    "\ufffd\ufffd replaced bytes",
    "\u200b\u202e\u2028\u2029\ufeff format and separators",
    "🙂 emoji ⟨ᚠ⟩ ∑ 漢字",
    "x" * 20_000,
    "\\x00 literal escapes %s %n {0} ${HOME} `rm -rf /`",
]


def random_actions(seed: str, count: int) -> list[str]:
    """Random byte strings decoded as a detokenizer or a careless adapter may decode them."""
    rng = random.Random(seed)
    actions = []
    for _ in range(count):
        data = bytes(rng.randrange(256) for _ in range(rng.choice([1, 8, 64, 600])))
        actions.append(data.decode("utf-8", rng.choice(["surrogateescape", "replace", "ignore"])))
    return actions


def test_sanitised_keeps_text_and_newlines_and_drops_what_no_parser_wants():
    assert sanitised("take the red key\nthen go north") == "take the red key\nthen go north"
    assert sanitised("\x00\xff garbage") == " \xff garbage"
    assert sanitised("go\x07north\tnow") == "go north now"
    assert sanitised("a\udcffb\ufffdc\u200bd\xa0e\u2028f") == "abc d e\nf"
    assert sanitised("é 漢字 🙂") == "é 漢字 🙂"
    assert len(sanitised("x" * 10**6)) == MAX_ACTION_CHARS
    assert match_action("\x00\x00go  north\x1b", ["go north", "go south"]) == "go north"
    assert frotz_command(" \\\\help") == "help"  # dumb-frotz's own commands start with a backslash, and hang
    assert frotz_command("look \\x") == "look \\x"
    assert frotz_command("é" * 150 + "take key" + "x" * 300) == "take key" + "x" * 189
    for action in random_actions("sanitised", 200):
        text = sanitised(action)
        text.encode("utf-8")  # no lone surrogate is left
        assert all(c == "\n" or c.isprintable() or c == " " for c in text), ascii(text)
        assert len(text) <= MAX_ACTION_CHARS


def _names(suites: list[str]) -> list[str]:
    names = []
    for suite in suites:
        if importlib.util.find_spec(suite) is None:
            continue  # its extra is not installed: CI installs every extra, so CI plays them all
        names += [f"{suite}/{game}" for game in SUITES[suite]]
    return names


def _play(names: list[str], options: dict[str, dict], random_per_env: int) -> dict[str, int]:
    """Play NASTY then random actions on each env's first train task, resetting when done; returns steps per env."""

    async def play() -> dict[str, int]:
        process = await EnvProcess.start(step_timeout_s=STEP_TIMEOUT_S, reset_timeout_s=180.0)
        steps: dict[str, int] = {}
        try:
            for name in names:
                process.make(name, seed=0, options=options.get(name, {}))
                task = _first_task(name, options.get(name, {}))
                await process.reset(task)
                for action in NASTY + random_actions(name, random_per_env):
                    result = await process.step(action)
                    steps[name] = steps.get(name, 0) + 1
                    json.dumps(result.observation)
                    if result.done:
                        await process.reset(task)
        finally:
            await process.close()
        return steps

    return asyncio.run(play())


def _first_task(name: str, options: dict) -> Task:
    from envs import make_env

    return make_env(name, seed=0, **options).tasks("train")[0]


def test_every_builtin_env_answers_any_bytes(tmp_path, monkeypatch):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(json.dumps({"id": f"q{i}", "prompt": f"{i} + 1?", "answer": i + 1}) + "\n" for i in range(4))
    )
    (tmp_path / "garbage_rewards.py").write_text(
        "def exact(actions, row):\n    return actions[-1].strip() == str(row['answer'])\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the env process imports the reward function from there
    monkeypatch.syspath_prepend(str(tmp_path))  # and so does _first_task, here
    options = {"dataset": {"path": str(rows), "reward": "garbage_rewards:exact"}}
    names = [name for name in BUILTINS if not name.startswith("faulty")]
    names += _names(["textworld", "textarena", "reasoning_gym"])
    steps = _play(names, options, random_per_env=8)
    assert set(steps) == set(names)
    assert all(count == len(NASTY) + 8 for count in steps.values())


@pytest.mark.slow  # a JVM per game: about 25 s on 2 cores
def test_every_jvm_env_answers_any_bytes():
    names = _names(["textworld_express", "scienceworld"])
    if not names:
        pytest.skip("no JVM suite installed")
    steps = _play(names, {}, random_per_env=4)
    assert set(steps) == set(names)
