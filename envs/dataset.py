"""[env] Dataset: the user's tasks from a JSONL or Parquet file, scored by the user's reward function.

    file -> rows (all checked when the env is made) -> tasks(split) -> reset(task): the row's prompt
         -> step(action): reward function(actions, row) -> a number (the trajectory ends with that reward)
                                                        or a StepResult (its observation, e.g. "wrong, try again")

The reward function is named "module:function" and imported from sys.path (envs.registry.load_object).
envs/README.md ("The dataset env") gives the file format, the reward function's contract, the splits and the errors.
"""

import dataclasses
import inspect
import json
import math
import numbers
import reprlib
import traceback
import zlib
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

from envs.base import StepResult, Task, resolved
from envs.registry import load_object
from envs.tasks import SPLITS, in_eval

ROW_KEYS = ("id", "prompt", "answer", "metadata")  # what a row has besides its split; what the reward function gets
MAX_PROBLEMS = 20  # malformed rows quoted in one error; the rest are counted


class Dataset:
    def __init__(
        self,
        seed: int = 0,
        *,
        path: str,
        reward: str,
        split_column: str = "split",
        success_threshold: float = 1.0,
        max_steps: int = 4,
        num_tasks: int = 512,
    ):
        """path: a .jsonl or .parquet file of rows; reward: the reward function, "module:function".

        num_tasks caps the train split (its first rows in file order); a file with fewer train rows gives them
        all (training cycles through the task list). The eval split is every eval row. A trajectory succeeds
        when the reward that ends it is at least success_threshold, unless the reward function's StepResult gives
        its own `success`. seed is unused: a dataset has no luck.
        """
        if max_steps < 1 or num_tasks < 1:
            raise ValueError(f"dataset: max_steps and num_tasks must be >= 1, got {max_steps}, {num_tasks}")
        if not math.isfinite(success_threshold):
            raise ValueError(f"dataset: success_threshold must be a finite number, got {success_threshold}")
        self.reward_spec, self.success_threshold, self.max_steps = reward, success_threshold, max_steps
        self._reward_fn = _reward_function(reward)
        rows, splits = load_rows(Path(path), split_column)
        self._rows = {row["id"]: row for row in rows}
        tasks = [Task(task_id=row["id"], seed=zlib.crc32(row["id"].encode())) for row in rows]
        self._tasks = {split: [task for task, s in zip(tasks, splits) if s == split] for split in SPLITS}
        self._tasks["train"] = self._tasks["train"][:num_tasks]
        self._source = f"{path} (split column {split_column!r})"
        self._row: dict = {}
        self._actions: list[str] = []

    def tasks(self, split: str) -> list[Task]:
        if split not in SPLITS:
            raise ValueError(f"dataset: split must be 'train' or 'eval', got {split!r}")
        if not self._tasks[split]:
            raise ValueError(f"dataset: {self._source} has no row in the {split} split")
        return list(self._tasks[split])

    def reset(self, task: Task) -> str:
        if task.task_id not in self._rows:
            raise ValueError(f"dataset: {self._source} has no row with id {task.task_id!r}")
        self._row, self._actions = self._rows[task.task_id], []
        return self._row["prompt"]

    def step(self, action: str) -> StepResult:
        self._actions.append(action)
        result = self._score()
        if result.done or len(self._actions) >= self.max_steps:
            # The function's own verdict wins; a trajectory that max_steps cuts short never succeeds.
            given = resolved(result).success  # typed, or info["success"] as older StepResults give it
            verdict = result.reward >= self.success_threshold if given is None else given
            result = dataclasses.replace(result, done=True, success=result.done and verdict)
        return result

    def _score(self) -> StepResult:
        """The reward function's verdict on the actions so far, as a StepResult; an error names the function."""
        where = f"task {self._row['id']!r}, step {len(self._actions) - 1}"
        try:
            value = self._reward_fn(list(self._actions), self._row)
        except Exception as error:
            # Only this message crosses the env process (envs/worker.py): it says where the user's code failed.
            frame = traceback.extract_tb(error.__traceback__)[-1]
            raise RuntimeError(
                f"dataset: reward function {self.reward_spec} raised {type(error).__name__}: {error} "
                f"(at {frame.filename}:{frame.lineno}; {where})"
            ) from error
        result = value if isinstance(value, StepResult) else StepResult("", value, True)
        reward = result.reward
        if not isinstance(reward, numbers.Real) or not math.isfinite(reward) or not isinstance(result.observation, str):
            raise ValueError(
                f"dataset: reward function {self.reward_spec} returned {reprlib.repr(value)} ({where}); it must "
                "return a finite number or an envs.base.StepResult with a string observation and a finite reward"
            )
        return dataclasses.replace(result, reward=float(reward))  # a bool or a numpy number too


def _reward_function(spec: str) -> Callable:
    """The function `spec` names, checked to take (actions, row)."""
    function = load_object(spec, "reward function")
    if not callable(function):
        raise ValueError(f"dataset: reward function {spec!r} is a {type(function).__name__}, not a function")
    try:
        inspect.signature(function).bind([], {})
    except TypeError as error:
        raise ValueError(f"dataset: reward function {spec!r} must take (actions, row): {error}") from None
    return function


def load_rows(path: Path, split_column: str) -> tuple[list[dict], list[str]]:
    """The file's rows ({"id", "prompt", "answer", "metadata"}) and the split of each, in file order.

    Every row is checked; a ValueError lists the malformed ones as `file:line: what is wrong` (JSONL, lines
    from 1) or `file:row i: ...` (Parquet, rows from 0).
    """
    records, problems = read_records(path)
    if not records and not problems:
        raise ValueError(f"dataset: {path} has no rows")
    # A split column, once any row fills it, must be filled in every row: a forgotten one is not hashed.
    split_given = any(isinstance(record, dict) and record.get(split_column) is not None for _, record in records)
    rows, splits, first_place = [], [], {}
    for place, record in records:
        try:
            row, split = parse_row(record, split_column, split_given)
            if row["id"] in first_place:
                raise ValueError(f"duplicate id {row['id']!r} (first at {first_place[row['id']]})")
        except ValueError as error:
            problems.append(f"{place}: {error}")
            continue
        first_place[row["id"]] = place
        rows.append(row)
        splits.append(split)
    if problems:
        more = f"\n... and {len(problems) - MAX_PROBLEMS} more" if len(problems) > MAX_PROBLEMS else ""
        raise ValueError(
            f"dataset: {len(problems)} malformed row(s) in {path}:\n" + "\n".join(problems[:MAX_PROBLEMS]) + more
        )
    return rows, splits


def read_records(path: Path) -> tuple[list[tuple[str, object]], list[str]]:
    """(place, value) for each row of the file, and the lines that are not JSON."""
    if path.suffix not in (".jsonl", ".parquet"):
        raise ValueError(f"dataset: path must be a .jsonl or .parquet file, got {str(path)!r}")
    if not path.is_file():
        raise FileNotFoundError(f"dataset: no file {str(path)!r} (a relative path starts at {Path.cwd()})")
    if path.suffix == ".parquet":
        try:
            table = pq.read_table(path)
        except Exception as error:
            raise ValueError(f"dataset: cannot read {path} as Parquet: {type(error).__name__}: {error}") from None
        return [(f"{path}:row {i}", record) for i, record in enumerate(table.to_pylist())], []
    records, problems = [], []
    with open(path, "rb") as file:  # bytes: a line that is not UTF-8 is one malformed row, not a crash
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                records.append((f"{path}:{number}", json.loads(line)))
            except ValueError as error:
                problems.append(f"{path}:{number}: not JSON ({error})")
    return records, problems


def parse_row(record: object, split_column: str, split_given: bool) -> tuple[dict, str]:
    """The row as {"id", "prompt", "answer", "metadata"} and its split; a ValueError says what is wrong."""
    if not isinstance(record, dict):
        raise ValueError(f"a row must be a JSON object, got {_kind(record)}")
    unknown = sorted(set(record) - {*ROW_KEYS, split_column})
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(map(repr, unknown))}; a row has {', '.join(ROW_KEYS)} and {split_column!r} "
            "(put anything else in metadata)"
        )
    for key in ("id", "prompt"):
        if key not in record:
            raise ValueError(f"missing {key}")
        if not isinstance(record[key], str) or not record[key]:
            got = "an empty string" if record[key] == "" else _kind(record[key])
            raise ValueError(f"{key} must be a non-empty string, got {got}")
    metadata = {} if record.get("metadata") is None else record["metadata"]
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata must be an object, got {_kind(metadata)}")
    split = record.get(split_column)
    if not split_given:
        split = "eval" if in_eval(record["id"]) else "train"
    elif split is None:
        raise ValueError(f"no {split_column!r}, though other rows have one: give every row a split, or none")
    elif split not in SPLITS:
        raise ValueError(f"{split_column} must be 'train' or 'eval', got {reprlib.repr(split)}")
    return {"id": record["id"], "prompt": record["prompt"], "answer": record.get("answer"), "metadata": metadata}, split


def _kind(value: object) -> str:
    """The JSON name of a value's type, as the user who wrote the file would say it."""
    if value is None:
        return "null"
    for kind, types in (("a boolean", bool), ("a number", numbers.Number), ("a string", str), ("an array", list)):
        if isinstance(value, types):
            return kind
    return "an object" if isinstance(value, dict) else type(value).__name__
