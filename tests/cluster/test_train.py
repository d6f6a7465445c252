"""The driver's pure parts: the per-iteration batch metrics users read, and when an evaluation is due."""

import numpy as np
import pytest

from actors.trajectory import Trajectory, to_ipc, to_table, with_columns
from cluster.config import load
from cluster.train import action_lengths, batch_metrics, evaluation_due, evaluation_tasks


def _trajectory(i: int, actions: list[int]) -> Trajectory:
    """A prompt of 3 tokens, then each action (its length in tokens) followed by a 2-token observation."""
    tokens, mask, index = [1, 2, 3], [False] * 3, [-1] * 3
    for step, length in enumerate(actions):
        tokens += [5] * length + [6, 7]
        mask += [True] * length + [False, False]
        index += [step] * length + [-1, -1]
    return Trajectory(
        trajectory_id=f"t{i}",
        task_id=f"task{i}",
        group_id=f"g{i}",
        policy_version=0,
        tokens=tokens,
        action_mask=mask,
        step_index=index,
        behavior_logp=[0.0] * len(tokens),
        step_rewards=[0.0] * len(actions),
        outcome=float(i % 2),
        num_steps=len(actions),
        finish_reason="done",
    )


def test_action_lengths_count_each_actions_sampled_tokens():
    index = [np.array([-1, -1, 0, 0, 0, -1, 1, -1, 2, 2]), np.array([-1, 0, -1]), np.array([-1, -1])]
    assert action_lengths(index).tolist() == [3, 1, 2, 1]


def test_batch_metrics_report_response_lengths_and_the_truncated_share():
    cfg = load(None, ["actors.max_tokens=8"])
    trajectories = [_trajectory(0, [3, 8, 2]), _trajectory(1, [8])]
    table = to_table(trajectories)
    table = with_columns(table, progress_adv=[np.zeros(t.num_steps, np.float32) for t in trajectories])
    times = {"time/iteration": 2.0}
    metrics = batch_metrics(to_ipc(table), times, learner_version=0, cfg=cfg)
    assert metrics["rollout/response_tokens_mean"] == pytest.approx(21 / 4)
    assert metrics["rollout/response_tokens_max"] == 8
    assert metrics["rollout/truncated_share"] == 0.5  # 2 of 4 actions used all of max_tokens
    assert metrics["rollout/action_tokens"] == 21 and metrics["rollout/sustained_tokens_per_s"] == 10.5


@pytest.mark.parametrize(
    ("every", "num_iterations", "due"),
    [(0, 5, []), (2, 5, [2, 4, 5]), (2, 4, [2, 4]), (10, 3, [3]), (1, 3, [1, 2, 3])],
)
def test_an_evaluation_is_due_every_n_iterations_and_after_the_last(every, num_iterations, due):
    cfg = load(None, [f"cluster.eval_every={every}", f"num_iterations={num_iterations}"])
    assert [k for k in range(num_iterations + 1) if evaluation_due(cfg, k)] == due


def test_evaluation_tasks_are_the_first_of_the_eval_split_and_the_same_for_the_same_seed():
    cfg = load(None, ["cluster.eval_every=1", "cluster.eval_num_tasks=3", "env.name=corridor"])
    tasks = evaluation_tasks(cfg)
    assert [t.task_id for t in tasks] == [t.task_id for t in evaluation_tasks(cfg)]
    assert len(tasks) == 3
    from envs import make_env

    eval_split = make_env("corridor", seed=0, **cfg.env.make_env_kwargs()).tasks("eval")
    assert tasks == eval_split[:3]
    assert not {t.task_id for t in tasks} & {t.task_id for t in make_env("corridor", seed=0).tasks("train")}
    assert evaluation_tasks(load(None, ["env.name=corridor"])) == []  # no eval_every, nothing to play


def test_more_eval_tasks_than_the_split_has_is_refused_naming_the_key():
    from cluster.config import ConfigError

    cfg = load(None, ["cluster.eval_every=1", "cluster.eval_num_tasks=1000", "env.name=corridor"])
    with pytest.raises(ConfigError, match=r"cluster.eval_num_tasks \(1000\) must be at most the \d+ tasks"):
        evaluation_tasks(cfg)
