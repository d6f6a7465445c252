"""[plumbing] Checkpoints of a run: checkpoints/iteration_NNNNN/ with learner and scorer state and state.json.

A checkpoint is written into a hidden temporary directory and renamed into place only when complete,
so a crash mid-save never leaves a directory that looks valid; the newest `keep` complete ones stay.
"""

import json
import os
import shutil
from pathlib import Path

from cluster.log import is_evaluation, read_lines

STATE = "state.json"


def save(roles, run_dir: Path, iterations_done: int, policy_version: int, keep: int) -> Path:
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    target, tmp = root / f"iteration_{iterations_done:05d}", root / f".iteration_{iterations_done:05d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        roles.save_checkpoint(str(tmp))
        (tmp / STATE).write_text(json.dumps({"iterations_done": iterations_done, "policy_version": policy_version}))
    except BaseException:  # a failed or interrupted save leaves nothing behind, not even its temporary directory
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    for old in complete(run_dir)[:-keep]:
        shutil.rmtree(old)
    return target


def complete(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = run_dir / "checkpoints"
    return sorted(p for p in root.glob("iteration_*") if (p / STATE).is_file()) if root.is_dir() else []


def latest(run_dir: Path) -> tuple[Path, dict]:
    """The newest complete checkpoint and its state, or FileNotFoundError naming the directory."""
    found = complete(run_dir)
    if not found:
        raise FileNotFoundError(
            f"no complete checkpoint in {run_dir / 'checkpoints'}; a run saves them when cluster.save_every > 0"
        )
    return found[-1], json.loads((found[-1] / STATE).read_text())


def resume_hint(run_dir: Path) -> str:
    """Where a stopped run is and how to continue it, from what its directory holds."""
    done = sum(1 for m in read_lines(run_dir / "metrics.jsonl") if not is_evaluation(m))
    if not complete(run_dir):
        return f"{done} iterations were done; it has no checkpoint to resume from (set cluster.save_every)"
    saved = latest(run_dir)[1]["iterations_done"]
    return (
        f"{done} iterations were done; continue it from its checkpoint after {saved} with: "
        f"freelunch train --resume {run_dir}"
    )
