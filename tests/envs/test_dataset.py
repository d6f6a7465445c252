"""The dataset env: rows from JSONL and Parquet, splits, malformed rows, the user's reward function, env processes."""

import asyncio
import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from actors.agent_loop import run_agent
from actors.engine import Completion
from envs.base import StepResult, Task
from envs.dataset import Dataset
from envs.process import EnvProcess
from envs.registry import EnvSpecError
from envs.tasks import in_eval

REWARDS = """
import math

from envs.base import StepResult


def exact(actions, row):
    return actions[-1].strip() == str(row["answer"])


def half(actions, row):
    return 0.5 if actions[-1].strip() == str(row["answer"]) else 0.0


def guess(actions, row):
    if int(actions[-1]) == row["answer"]:
        return StepResult("right", 1.0, True, {"guesses": len(actions)})
    return StepResult("wrong, try " + ("higher" if int(actions[-1]) < row["answer"] else "lower"), 0.0, False)


def judged(actions, row):
    return StepResult("close enough", 0.3, True, success=True)


def boom(actions, row):
    return 1 / 0


def not_a_number(actions, row):
    return {"nan": math.nan, "text": "1", "none": None}[row["metadata"]["kind"]]


def one_argument(action):
    return 1.0


NOT_A_FUNCTION = 3
"""
BOOM_LINE = REWARDS.splitlines().index("    return 1 / 0") + 1


@pytest.fixture
def rewards(tmp_path, monkeypatch):
    """The module `dataset_rewards` (REWARDS), written in tmp_path and importable from sys.path."""
    (tmp_path / "dataset_rewards.py").write_text(REWARDS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "dataset_rewards", raising=False)  # each test imports its own copy
    return tmp_path / "dataset_rewards.py"


def write_jsonl(path, rows: list) -> str:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return str(path)


def questions(n: int) -> list[dict]:
    return [{"id": f"q{i}", "prompt": f"What is {i} + {i}?", "answer": 2 * i} for i in range(n)]


def test_rows_become_tasks_with_the_row_id_a_stable_seed_and_the_prompt_as_first_observation(tmp_path, rewards):
    env = Dataset(path=write_jsonl(tmp_path / "d.jsonl", questions(40)), reward="dataset_rewards:exact")
    train = env.tasks("train")
    assert train[0] == Task(task_id="q0", seed=1361341156)  # crc32("q0"): the same in every process
    assert env.reset(train[3]) == f"What is {train[3].task_id[1:]} + {train[3].task_id[1:]}?"


def test_without_a_split_column_the_id_hash_splits_disjointly_and_deterministically(tmp_path, rewards):
    path = write_jsonl(tmp_path / "d.jsonl", questions(100))
    env, again = (Dataset(path=path, reward="dataset_rewards:exact") for _ in range(2))
    train, held_out = [t.task_id for t in env.tasks("train")], [t.task_id for t in env.tasks("eval")]
    assert held_out == [f"q{i}" for i in range(100) if in_eval(f"q{i}")] and 10 <= len(held_out) <= 30
    assert sorted(train + held_out) == sorted(f"q{i}" for i in range(100)) and not set(train) & set(held_out)
    assert again.tasks("train") == env.tasks("train") and again.tasks("eval") == env.tasks("eval")


def test_a_split_column_decides_the_split_and_can_be_renamed(tmp_path, rewards):
    rows = [row | {"fold": "eval" if i < 3 else "train"} for i, row in enumerate(questions(10))]
    env = Dataset(path=write_jsonl(tmp_path / "d.jsonl", rows), reward="dataset_rewards:exact", split_column="fold")
    assert [t.task_id for t in env.tasks("eval")] == ["q0", "q1", "q2"]
    assert [t.task_id for t in env.tasks("train")] == [f"q{i}" for i in range(3, 10)]
    with pytest.raises(ValueError, match=r"dataset: .*e.jsonl \(split column 'split'\) has no row in the eval split"):
        Dataset(path=write_jsonl(tmp_path / "e.jsonl", questions(2)), reward="dataset_rewards:exact").tasks("eval")


def test_num_tasks_caps_the_train_split_and_a_smaller_file_gives_every_row(tmp_path, rewards):
    path = write_jsonl(tmp_path / "d.jsonl", [row | {"split": "train"} for row in questions(10)])
    capped = Dataset(path=path, reward="dataset_rewards:exact", num_tasks=4)
    assert [t.task_id for t in capped.tasks("train")] == ["q0", "q1", "q2", "q3"]
    assert len(Dataset(path=path, reward="dataset_rewards:exact", num_tasks=512).tasks("train")) == 10


def test_parquet_gives_the_same_tasks_and_rows_as_jsonl(tmp_path, rewards):
    rows = [row | {"metadata": {"level": i % 3}} for i, row in enumerate(questions(30))]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    seen = []
    for path in (str(tmp_path / "d.parquet"), write_jsonl(tmp_path / "d.jsonl", rows)):
        env = Dataset(path=path, reward="dataset_rewards:exact")
        tasks = env.tasks("train") + env.tasks("eval")
        seen.append([(task, env.reset(task), env.step(str(2 * int(task.task_id[1:])))) for task in tasks])
    assert seen[0] == seen[1] and len(seen[0]) == 30 and all(result.reward == 1.0 for _, _, result in seen[0])


def test_malformed_jsonl_rows_are_all_reported_at_once_with_file_and_line(tmp_path, rewards):
    lines = [
        {"id": "a", "prompt": "fine", "split": "train"},
        "{not json",
        "",  # blank lines are skipped, and still counted
        ["a", "list"],
        {"prompt": "no id", "split": "train"},
        {"id": "a", "prompt": "again", "split": "eval"},
        {"id": "b", "prompt": 7, "split": "train"},
        {"id": "c", "prompt": "", "split": "train"},
        {"id": "d", "prompt": "p", "split": "test"},
        {"id": "e", "prompt": "p"},
        {"id": "f", "prompt": "p", "split": "train", "metadata": [1]},
        {"id": "g", "prompt": "p", "split": "train", "answr": 1},
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(ValueError) as caught:
        Dataset(path=path, reward="dataset_rewards:exact")
    assert str(caught.value).splitlines() == [
        f"dataset: 10 malformed row(s) in {path}:",
        f"{path}:2: not JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))",
        f"{path}:4: a row must be a JSON object, got an array",
        f"{path}:5: missing id",
        f"{path}:6: duplicate id 'a' (first at {path}:1)",
        f"{path}:7: prompt must be a non-empty string, got a number",
        f"{path}:8: prompt must be a non-empty string, got an empty string",
        f"{path}:9: split must be 'train' or 'eval', got 'test'",
        f"{path}:10: no 'split', though other rows have one: give every row a split, or none",
        f"{path}:11: metadata must be an object, got an array",
        f"{path}:12: unknown key(s) 'answr'; a row has id, prompt, answer, metadata and 'split' (put anything else "
        "in metadata)",
    ]


def test_malformed_parquet_rows_are_reported_by_row_index(tmp_path, rewards):
    table = pa.table({"id": ["a", "b", "a", None], "prompt": ["p", None, "p", "p"]})
    pq.write_table(table, tmp_path / "bad.parquet")
    path = str(tmp_path / "bad.parquet")
    with pytest.raises(ValueError) as caught:
        Dataset(path=path, reward="dataset_rewards:exact")
    assert str(caught.value).splitlines() == [
        f"dataset: 3 malformed row(s) in {path}:",
        f"{path}:row 1: prompt must be a non-empty string, got null",
        f"{path}:row 2: duplicate id 'a' (first at {path}:row 0)",
        f"{path}:row 3: id must be a non-empty string, got null",
    ]


def test_a_missing_file_or_an_unknown_format_is_reported_before_anything_starts(tmp_path, rewards):
    with pytest.raises(FileNotFoundError, match=r"dataset: no file '.*nope.jsonl' \(a relative path starts at /"):
        Dataset(path=str(tmp_path / "nope.jsonl"), reward="dataset_rewards:exact")
    (tmp_path / "d.csv").write_text("id,prompt\n")
    with pytest.raises(ValueError, match=r"path must be a .jsonl or .parquet file, got '.*d.csv'"):
        Dataset(path=str(tmp_path / "d.csv"), reward="dataset_rewards:exact")
    (tmp_path / "fake.parquet").write_text("not parquet")
    with pytest.raises(ValueError, match=r"cannot read .*fake.parquet as Parquet: ArrowInvalid"):
        Dataset(path=str(tmp_path / "fake.parquet"), reward="dataset_rewards:exact")
    with pytest.raises(ValueError, match=r"dataset: .*empty.jsonl has no rows"):
        Dataset(path=write_jsonl(tmp_path / "empty.jsonl", []), reward="dataset_rewards:exact")


def test_a_reward_function_that_does_not_load_or_cannot_take_actions_and_row_is_refused(tmp_path, rewards):
    path = write_jsonl(tmp_path / "d.jsonl", questions(3))
    with pytest.raises(EnvSpecError, match=r"reward function 'no_such_module:f': module 'no_such_module' does not"):
        Dataset(path=path, reward="no_such_module:f")
    with pytest.raises(EnvSpecError, match=r"reward function 'dataset_rewards:missing': .* no attribute 'missing'"):
        Dataset(path=path, reward="dataset_rewards:missing")
    with pytest.raises(ValueError, match=r"reward function 'dataset_rewards:NOT_A_FUNCTION' is a int, not a func"):
        Dataset(path=path, reward="dataset_rewards:NOT_A_FUNCTION")
    with pytest.raises(ValueError, match=r"'dataset_rewards:one_argument' must take \(actions, row\): too many"):
        Dataset(path=path, reward="dataset_rewards:one_argument")


def test_a_number_ends_the_trajectory_and_succeeds_from_success_threshold(tmp_path, rewards):
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": "q", "prompt": "2 + 2?", "answer": 4, "split": "train"}])
    env = Dataset(path=path, reward="dataset_rewards:exact")
    task = env.tasks("train")[0]
    env.reset(task)
    assert env.step(" 4\n") == StepResult("", 1.0, True, success=True)
    env.reset(task)
    assert env.step("5") == StepResult("", 0.0, True, success=False)
    lenient = Dataset(path=path, reward="dataset_rewards:half", success_threshold=0.5)
    lenient.reset(task)
    assert lenient.step("4") == StepResult("", 0.5, True, success=True)
    judged = Dataset(path=path, reward="dataset_rewards:judged")  # the function's own verdict wins
    judged.reset(task)
    assert judged.step("4") == StepResult("close enough", 0.3, True, success=True)


def test_a_step_result_continues_with_its_observation_until_done_or_max_steps(tmp_path, rewards):
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": "n", "prompt": "Guess my number (1-10).", "answer": 7}])
    env = Dataset(path=path, reward="dataset_rewards:guess", max_steps=3)
    task = env.tasks("train")[0]
    assert env.reset(task) == "Guess my number (1-10)."
    assert env.step("5") == StepResult("wrong, try higher", 0.0, False)
    assert env.step("7") == StepResult("right", 1.0, True, {"guesses": 2}, success=True)
    env.reset(task)
    played = [env.step(guess) for guess in ("9", "8", "1")]
    assert [(r.observation, r.done) for r in played] == [
        ("wrong, try lower", False),
        ("wrong, try lower", False),
        ("wrong, try higher", True),
    ]
    assert played[-1].success is False  # max_steps ended it


def test_a_reward_function_that_raises_or_returns_no_number_is_an_error_naming_it(tmp_path, rewards):
    rows = [
        {"id": kind, "prompt": "p", "metadata": {"kind": kind}, "split": "train"} for kind in ("nan", "text", "none")
    ]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    env = Dataset(path=path, reward="dataset_rewards:boom")
    env.reset(env.tasks("train")[0])
    message = rf"dataset: reward function dataset_rewards:boom raised ZeroDivisionError: division by zero \(at {rewards}:{BOOM_LINE}; task 'nan', step 0\)"  # noqa: E501
    with pytest.raises(RuntimeError, match=message):
        env.step("go")
    env = Dataset(path=path, reward="dataset_rewards:not_a_number")
    for task, shown in zip(env.tasks("train"), ("nan", "'1'", "None")):
        env.reset(task)
        with pytest.raises(
            ValueError, match=rf"not_a_number returned {shown} \(task '{task.task_id}', step 0\); it must"
        ):
            env.step("go")


class ScriptedEngine:
    """Answers with the next text of its script (then eos); logp -0.5 per id."""

    def __init__(self, tokenizer, script: list[str]):
        self.tokenizer, self.script = tokenizer, list(script)

    async def generate(self, prompt_ids: list[int], *, max_tokens: int, temperature: float) -> Completion:
        ids = self.tokenizer.encode(self.script.pop(0) + self.tokenizer.eos_token, add_special_tokens=False)
        return Completion(token_ids=ids, logp=[-0.5] * len(ids), finish_reason="stop")


def test_env_process_plays_the_dataset_and_a_raising_reward_ends_only_its_trajectory(
    tmp_path, rewards, monkeypatch, tiny_model_dir
):
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the child imports dataset_rewards from there
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": "n", "prompt": "Guess my number.", "answer": 7}])
    limits = dict(group_id="g", max_steps=4, max_tokens=16, max_trajectory_tokens=2048, temperature=1.0)

    async def main():
        process = await EnvProcess.start(step_timeout_s=10.0, reset_timeout_s=10.0)
        played = []
        try:
            for reward, script in [("guess", ["3", "9", "7"]), ("exact", ["7"]), ("exact", ["8"]), ("boom", ["7"])]:
                process.make("dataset", 0, {"path": path, "reward": f"dataset_rewards:{reward}", "max_steps": 4})
                engine = ScriptedEngine(tokenizer, script)
                played.append(await run_agent(process, Task("n", 0), engine, tokenizer, trajectory_id=reward, **limits))
            return played, process.broken
        finally:
            await process.close()

    played, broken = asyncio.run(asyncio.wait_for(main(), 60))
    assert [(t.finish_reason, t.step_rewards, t.success) for t in played[:3]] == [
        ("done", [0.0, 0.0, 1.0], True),
        ("done", [1.0], True),
        ("done", [0.0], False),
    ]
    assert (played[3].finish_reason, played[3].step_rewards, broken) == ("error", [0.0], True)
    assert played[3].error.startswith(
        "EnvRaised: RuntimeError: dataset: reward function dataset_rewards:boom raised ZeroDivisionError: division by "
        f"zero (at {rewards}:{BOOM_LINE}; task 'n', step 0)"
    )
