"""[env] Task lists: deterministic train/eval splits by a hash of the task id."""

import zlib

from envs.base import Task

SPLITS = ("train", "eval")


def split_tasks(env_name: str, split: str, num_tasks: int) -> list[Task]:
    """The first num_tasks tasks `<env_name>-<i>` (seed i) of `split`; one in five ids goes to eval.

    crc32 of the id decides the split: deterministic, the two splits disjoint, independent of order.
    """
    if split not in SPLITS:
        raise ValueError(f"{env_name}: split must be 'train' or 'eval', got {split!r}")
    tasks, i = [], 0
    while len(tasks) < num_tasks:
        task = Task(task_id=f"{env_name}-{i}", seed=i)
        if in_eval(task.task_id) == (split == "eval"):
            tasks.append(task)
        i += 1
    return tasks


def in_eval(task_id: str) -> bool:
    """Whether a task without a split of its own belongs to eval: crc32 of its id, one in five."""
    return zlib.crc32(task_id.encode()) % 5 == 0
