"""The driver: launch the roles, then collect -> score -> update -> broadcast, once per iteration.

    freelunch train [CONFIG.toml] [dotted.key=value ...] [--run-dir DIR] [--resume RUN_DIR]

Read this file first. The loop has no Ray calls: `Roles` (cluster/role.py) hides them and hands back
Arrow IPC tables and dicts of floats. The math is in learner/advantage.py and learner/loss.py.
"""

import dataclasses
import random
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from actors.rollout import Work
from actors.trajectory import from_ipc, ragged, to_ipc, with_columns, write_parquet
from cluster import checkpoint
from cluster.config import Config, ConfigError, dump, tasks_per_iteration
from cluster.eval import eval_work, summary_of, write_results
from cluster.log import MetricsLog, timer
from cluster.role import RoleDied, launch
from cluster.trackers import Trackers
from envs import Task, make_env
from learner.advantage import outcome_advantage, step_advantage
from learner.aggregate import auroc, min_cumulative


def train(cfg: Config, run_dir: Path, model_dir: str, resume: bool = False) -> None:
    (run_dir / "trajectories").mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(dump(cfg))
    tasks, eval_tasks = task_order(cfg), evaluation_tasks(cfg)  # a bad env or split fails before any actor starts
    saved = checkpoint.latest(run_dir) if resume else None  # (its directory, its state)
    done = saved[1]["iterations_done"] if saved else 0
    trackers = Trackers(cfg.cluster.trackers, run_dir, dataclasses.asdict(cfg), start_iteration=done)
    log = MetricsLog(run_dir, cfg.num_iterations, trackers)
    with launch(cfg, model_dir) as roles, closing(log), role_died_hint(run_dir):
        start, version = restore(roles, *saved, log) if saved else (0, 0)
        handed_out: dict[int, list[Work]] = {}  # iteration -> its work, from hand-out until taken
        evaluation = start_evaluation(roles, cfg, eval_tasks, run_dir, start, version)  # a resume redoes a lost one
        for iteration in range(start, cfg.num_iterations):
            times: dict[str, float] = {}
            with timer(times, "time/iteration"):
                # Rollouts run up to max_staleness iterations ahead of the learner; 0 = on-policy, in turn.
                for ahead in range(iteration, min(iteration + cfg.learner.max_staleness, cfg.num_iterations - 1) + 1):
                    if ahead not in handed_out:
                        handed_out[ahead] = schedule(cfg, tasks, ahead)
                        roles.start_collect(handed_out[ahead])
                with timer(times, "time/collect"):  # the wait for this iteration's trajectories
                    work = handed_out.pop(iteration)
                    batch, rollout_metrics = roles.take(work, version - cfg.learner.max_staleness)
                with timer(times, "time/score"):
                    batch, score_metrics = roles.score(batch)
                batch, advantage_metrics = add_step_advantages(batch, cfg)
                with timer(times, "time/update"):
                    update_metrics = roles.update(batch)
                if evaluation:  # it played beside this iteration's rollouts; the broadcast would change its policy
                    with timer(times, "time/eval_wait"):
                        finish_evaluation(roles, cfg, evaluation, run_dir, log)
                with timer(times, "time/broadcast"):
                    version += 1
                    sent = roles.broadcast(version)
                write_parquet(from_ipc(batch), run_dir / "trajectories" / f"iteration_{iteration:05d}.parquet")
            log.write(
                {
                    "iteration": iteration,
                    "policy_version": version,
                    **batch_metrics(batch, times, version - 1, cfg),
                    **rollout_metrics,
                    "system/buffer_depth": roles.buffer_depth(),
                    **score_metrics,
                    **advantage_metrics,
                    **update_metrics,
                    "system/broadcast_bytes": sent,
                    **times,
                }
            )
            if cfg.cluster.save_every and (iteration + 1) % cfg.cluster.save_every == 0:
                checkpoint.save(roles, run_dir, iteration + 1, version, cfg.cluster.keep_checkpoints)
            evaluation = start_evaluation(roles, cfg, eval_tasks, run_dir, iteration + 1, version)
        if evaluation:  # after the last iteration
            finish_evaluation(roles, cfg, evaluation, run_dir, log)
        roles.save_policy(str(run_dir / "policy"))


@contextmanager
def role_died_hint(run_dir: Path):
    """A learner or scorer that died ends the run; say how to continue it."""
    try:
        yield
    except RoleDied as error:
        raise RoleDied(f"{error}. The run cannot go on without it; {checkpoint.resume_hint(run_dir)}") from error


def restore(roles, path: Path, state: dict, log: MetricsLog) -> tuple[int, int]:
    """Load a checkpoint (checkpoint.latest's directory and state) into the roles; returns (iterations done,
    policy version)."""
    roles.load_checkpoint(str(path), state["policy_version"])  # and broadcast: the engines serve it
    log.forget_from(state["iterations_done"])  # iterations after the checkpoint are redone
    return state["iterations_done"], state["policy_version"]


def task_order(cfg: Config) -> list[Task]:
    """The train split in a seeded order, built once per run (a real suite's task list may start a JVM)."""
    tasks = make_env(cfg.env.name, seed=cfg.seed, **cfg.env.make_env_kwargs()).tasks("train")
    if len(tasks) < tasks_per_iteration(cfg):  # an iteration's groups must be distinct tasks (a small dataset)
        raise ConfigError(
            f"{cfg.env.name}'s train split has {len(tasks)} tasks; an iteration plays learner.batch_size / "
            f"learner.group_size = {tasks_per_iteration(cfg)} distinct tasks: lower learner.batch_size or give more"
        )
    random.Random(cfg.seed).shuffle(tasks)
    return tasks


# --- evaluation during training ---
@dataclass
class Evaluation:
    """The eval split played by the policy after `iterations_done` iterations, in flight on the rollout actors."""

    iterations_done: int
    policy_version: int
    work: list[Work]
    started: float


def evaluation_tasks(cfg: Config) -> list[Task]:
    """The eval split's first cluster.eval_num_tasks tasks (0: all), the ones `freelunch eval` plays; [] without
    cluster.eval_every."""
    if not cfg.cluster.eval_every:
        return []
    tasks = make_env(cfg.env.name, seed=cfg.seed, **cfg.env.make_env_kwargs()).tasks("eval")
    if cfg.cluster.eval_num_tasks > len(tasks):
        raise ConfigError(
            f"cluster.eval_num_tasks ({cfg.cluster.eval_num_tasks}) must be at most the {len(tasks)} tasks of "
            f"{cfg.env.name}'s eval split (env.num_tasks={cfg.env.num_tasks}); 0 plays them all"
        )
    return tasks[: cfg.cluster.eval_num_tasks or len(tasks)]


def start_evaluation(
    roles, cfg: Config, tasks: list[Task], run_dir: Path, iterations_done: int, policy_version: int
) -> Evaluation | None:
    """Hand the eval split to the rollout actors when one is due after `iterations_done` iterations (every
    cluster.eval_every, and after the last) and not already on disk. It plays beside the next iteration's rollouts
    on the engines, so the learner waits only for what is left of it when the next broadcast comes."""
    if not evaluation_due(cfg, iterations_done) or (evaluation_dir(run_dir, iterations_done) / "summary.json").exists():
        return None
    work = eval_work(cfg.seed, tasks, group_size=1, prefix=f"eval{iterations_done:05d}-")
    roles.start_collect(work)
    return Evaluation(iterations_done, policy_version, work, time.monotonic())


def evaluation_due(cfg: Config, iterations_done: int) -> bool:
    """After every cluster.eval_every iterations, and after the last."""
    every = cfg.cluster.eval_every
    return (
        bool(every) and iterations_done > 0 and (iterations_done % every == 0 or iterations_done == cfg.num_iterations)
    )


def finish_evaluation(roles, cfg: Config, evaluation: Evaluation, run_dir: Path, log: MetricsLog) -> None:
    """Wait for the evaluation's trajectories; write evals/iteration_NNNNN/ (as `freelunch eval --out` does) and
    its metrics line, whose iteration is the number of iterations the evaluated policy was trained for."""
    table = from_ipc(roles.take_evaluation(evaluation.work))
    summary = summary_of(
        cfg,
        table,
        policy=f"{run_dir.name} after {evaluation.iterations_done} iterations",
        split="eval",
        group_size=1,
        time_s=time.monotonic() - evaluation.started,
    )
    write_results(evaluation_dir(run_dir, evaluation.iterations_done), table, summary)
    low, high = summary["success_interval_95"]
    log.write(
        {
            "iteration": evaluation.iterations_done,
            "policy_version": evaluation.policy_version,
            "eval/success_rate": summary["success_rate"],
            "eval/success_interval_low": low,
            "eval/success_interval_high": high,
            "eval/outcome_mean": summary["outcome_mean"],
            "eval/steps_mean": summary["steps_mean"],
            "eval/num_trajectories": summary["num_trajectories"],
            "eval/time_s": summary["time_s"],
        }
    )


def evaluation_dir(run_dir: Path, iterations_done: int) -> Path:
    return run_dir / "evals" / f"iteration_{iterations_done:05d}"


def schedule(cfg: Config, tasks: list[Task], iteration: int) -> list[Work]:
    """The iteration's trajectories: group_size per task, cycling through `tasks` (task_order)."""
    k = tasks_per_iteration(cfg)
    work = []
    for n in range(k):
        task = tasks[(iteration * k + n) % len(tasks)]
        group_id = f"{iteration:05d}-{task.task_id}"
        for j in range(cfg.learner.group_size):
            env_seed = hash((cfg.seed, iteration, n, j)) % 2**31
            work.append(Work(task=task, group_id=group_id, trajectory_id=f"{group_id}-{j}", env_seed=env_seed))
    return work


# --- algorithm ---
def add_step_advantages(batch: bytes, cfg: Config) -> tuple[bytes, dict[str, float]]:
    """Outcome advantage (group-normalised) + lambda * clipped, group-centred progress advantage, per step."""
    table = from_ipc(batch)
    group_ids = table.column("group_id").to_pylist()
    outcome_adv = outcome_advantage(table.column("outcome").to_numpy(), group_ids)
    advantage = step_advantage(
        outcome_adv,
        ragged(table, "progress_adv"),
        group_ids,
        coef=cfg.learner.progress_coef,
        clip=cfg.learner.progress_clip,
        failure_gating=cfg.learner.failure_gating,
    )
    # share of the advantage's magnitude that the progress term contributes (PAPER.md 8.4, what to monitor)
    outcome_part = np.concatenate([np.full(len(a), o) for a, o in zip(advantage, outcome_adv)] or [np.zeros(0)])
    total = np.concatenate(advantage or [np.zeros(0)])
    share = float(np.abs(total - outcome_part).sum() / max(np.abs(total).sum(), 1e-12))
    scored = with_columns(table, step_advantage=[a.astype(np.float32) for a in advantage])
    return to_ipc(scored), {"score/progress_share": share}


def batch_metrics(batch: bytes, times: dict[str, float], learner_version: int, cfg: Config) -> dict[str, float]:
    """learner_version: the policy version the batch updated (staleness = it - a trajectory's policy_version)."""
    max_staleness = cfg.learner.max_staleness
    table = from_ipc(batch)
    staleness = learner_version - table.column("policy_version").to_numpy()
    outcome = table.column("outcome").to_numpy()
    progress = ragged(table, "progress_adv")
    action_tokens = sum(int(m.sum()) for m in ragged(table, "action_mask"))
    finish = table.column("finish_reason").to_pylist()
    trajectory_pa = np.array([p.mean() if len(p) else 0.0 for p in progress])
    lengths = action_lengths(ragged(table, "step_index"))
    return {
        "rollout/outcome_mean": float(outcome.mean()),
        "rollout/success_rate": float(table.column("success").to_numpy(zero_copy_only=False).mean()),
        "rollout/num_trajectories": table.num_rows,
        "rollout/steps_mean": float(table.column("num_steps").to_numpy().mean()),
        "rollout/action_tokens": action_tokens,
        "rollout/response_tokens_mean": float(lengths.mean()) if len(lengths) else 0.0,
        "rollout/response_tokens_max": int(lengths.max()) if len(lengths) else 0,
        # actions that used all of actors.max_tokens: cut off, unless the last sampled token happened to end them
        "rollout/truncated_share": float((lengths >= cfg.actors.max_tokens).mean()) if len(lengths) else 0.0,
        # action tokens per second of the whole iteration (sampling, scoring, updating): the loop's throughput
        "rollout/sustained_tokens_per_s": action_tokens / max(times["time/iteration"], 1e-9),
        "rollout/staleness_mean": float(staleness.mean()),
        "rollout/staleness_max": int(staleness.max()),
        **{f"rollout/staleness_{k}": float((staleness == k).mean()) for k in range(max_staleness + 1)},  # histogram
        **{f"rollout/finish_{reason}": finish.count(reason) / len(finish) for reason in sorted(set(finish))},
        "score/progress_adv_mean": float(np.concatenate(progress).mean()) if action_tokens else 0.0,
        "score/progress_adv_std": float(np.concatenate(progress).std()) if action_tokens else 0.0,
        "score/auroc": auroc(trajectory_pa, outcome > 0.5),
        **progress_by_step(progress, outcome),
    }


def action_lengths(step_index: list[np.ndarray]) -> np.ndarray:
    """Sampled tokens of every action of the batch, trajectory after trajectory (step_index >= 0 on an action's
    tokens: its step's number)."""
    counts = [np.bincount(s[s >= 0].astype(np.int64)) for s in step_index]
    lengths = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
    return lengths[lengths > 0]


def progress_by_step(progress: list[np.ndarray], outcome: np.ndarray) -> dict[str, float]:
    """Mean progress advantage at each step position, and where failed trajectories (outcome <= 0.5)
    are predicted to have failed (argmin of the cumulative progress advantage, PAPER.md 3.5)."""
    metrics = {}
    for t in range(max((len(p) for p in progress), default=0)):
        metrics[f"score/progress_adv_step_{t}"] = float(np.mean([p[t] for p in progress if len(p) > t]))
    failed = [p for p, o in zip(progress, outcome) if o <= 0.5 and len(p)]
    predicted = [min_cumulative(p, [True] * len(p)) for p in failed]
    for t in sorted(set(predicted)):
        metrics[f"score/failure_step_{t}"] = predicted.count(t) / len(failed)
    return metrics
