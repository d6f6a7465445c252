"""Learner and Scorer in-process (DeepSpeed ZeRO-2, a gloo world of one) on the tiny model."""

import numpy as np
import pytest
import torch

from actors.trajectory import Trajectory, from_ipc, ragged, to_ipc, to_table, with_columns
from learner.advantage import step_sums
from learner.config import LearnerConfig
from learner.logp import pad, token_logp

CFG = LearnerConfig(
    model="tiny-random", dtype="float32", batch_size=4, group_size=2, microbatch_size=2, lr=1e-3, beta=0.5, prm_lr=1e-3
)


def _batch(seed: int = 0) -> bytes:
    """4 trajectories of 2 steps: prompt, action, observation, action; outcomes 1, 0, 1, 0."""
    rng = np.random.default_rng(seed)
    trajectories = []
    for i in range(4):
        prompt, action1, observation, action2 = (rng.integers(3, 500, n).tolist() for n in (6 + i, 3, 4, 2 + i))
        tokens = prompt + action1 + observation + action2
        mask = [False] * len(prompt) + [True] * 3 + [False] * 4 + [True] * (2 + i)
        index = [-1] * len(prompt) + [0] * 3 + [-1] * 4 + [1] * (2 + i)
        trajectories.append(
            Trajectory(
                trajectory_id=f"t{i}",
                task_id=f"task{i // 2}",
                group_id=f"g{i // 2}",
                policy_version=0,
                tokens=tokens,
                action_mask=mask,
                step_index=index,
                behavior_logp=[0.0] * len(tokens),
                step_rewards=[0.0, float(i % 2 == 0)],
                outcome=float(i % 2 == 0),
                num_steps=2,
                finish_reason="done",
                error="",
            )
        )
    return to_ipc(to_table(trajectories))


@pytest.fixture(scope="module")
def scorer(tiny_model_dir):
    from learner.scorer import Scorer

    return Scorer(CFG, model_dir=tiny_model_dir, temperature=0.7, seed=0)


@pytest.fixture(scope="module")
def learner(tiny_model_dir):
    from learner.learner import Learner, free_port

    learner = Learner(CFG, model_dir=tiny_model_dir, temperature=0.7, rank=0, world_size=1, seed=0)
    learner.setup("127.0.0.1", free_port())
    return learner


def test_untrained_prm_gives_exactly_zero_progress_advantage(scorer):
    # pi_phi starts as the reference: same weights, same code path, so the ratio is exactly 1.
    scored, metrics = scorer.score(_batch())
    assert all(np.all(p == 0.0) for p in ragged(from_ipc(scored), "progress_adv"))
    assert metrics["score/prm_loss"] == pytest.approx(4 * np.log(2) / 4, rel=1e-5)  # BCE of logit 0


def test_progress_advantage_is_beta_times_step_sum_of_prm_minus_ref_logratio(scorer):
    scorer.score(_batch(seed=1))  # one PRM update away from the reference
    batch = _batch(seed=2)
    table = from_ipc(batch)
    tokens = ragged(table, "tokens")
    with torch.no_grad():  # the expected values, from the PRM before this call's update
        ids, attention = pad(tokens)
        prm = token_logp(scorer.prm.module, ids, attention, temperature=0.7)
        ref = token_logp(scorer.ref, ids, attention, temperature=0.7)
    scored = from_ipc(scorer.score(batch)[0])
    for b, (progress, index, mask) in enumerate(
        zip(ragged(scored, "progress_adv"), ragged(table, "step_index"), ragged(table, "action_mask"))
    ):
        diff = np.where(mask, (prm[b] - ref[b])[: len(mask)].numpy(), 0.0)
        np.testing.assert_allclose(progress, 0.5 * step_sums(diff, index, 2), atol=1e-5)
        assert np.abs(progress).max() > 0
    np.testing.assert_allclose(
        np.concatenate(ragged(scored, "ref_logp")),
        np.concatenate([r[: len(t)] for r, t in zip(ref.numpy(), tokens)]),
        atol=1e-6,
    )


def _on_policy(learner, batch: bytes, advantage: float) -> bytes:
    """The batch with behaviour = reference = the learner's own log-probs, and a constant advantage."""
    table = from_ipc(batch)
    tokens = ragged(table, "tokens")
    ids, attention = pad(tokens)
    with torch.no_grad():
        logp = token_logp(learner.engine.module, ids, attention, temperature=0.7).numpy()
    own = [logp[b, : len(t)].astype(np.float32) for b, t in enumerate(tokens)]
    behavior = [np.where(m, o, 0.0).astype(np.float32) for m, o in zip(ragged(table, "action_mask"), own)]
    steps = [np.full(2, advantage, np.float32) for _ in tokens]
    return to_ipc(with_columns(table, behavior_logp=behavior, ref_logp=own, progress_adv=steps, step_advantage=steps))


def test_first_update_is_on_policy_and_moves_the_weights(learner):
    before = {n: p.detach().clone() for n, p in learner.engine.module.named_parameters()}
    metrics = learner.update(_on_policy(learner, _batch(), advantage=1.0))
    assert metrics["loss/ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["loss/kl"] == pytest.approx(0.0, abs=1e-7)
    assert metrics["loss/policy"] == pytest.approx(-1.0, abs=1e-6)  # -ratio * A on every action token
    assert metrics["loss/grad_norm"] > 0
    moved = [not torch.equal(before[n], p) for n, p in learner.engine.module.named_parameters()]
    assert any(moved)


def test_non_finite_loss_stops_before_any_update(learner):
    batch = from_ipc(_on_policy(learner, _batch(), advantage=1.0))
    steps = [np.array([np.nan, 0.0], np.float32) for _ in range(batch.num_rows)]
    poisoned = to_ipc(with_columns(batch, step_advantage=steps))
    before = {n: p.detach().clone() for n, p in learner.engine.module.named_parameters()}
    with pytest.raises(FloatingPointError, match="non-finite policy loss"):
        learner.update(poisoned)
    assert all(torch.equal(before[n], p) for n, p in learner.engine.module.named_parameters())


def test_saved_policy_reloads_with_the_learner_weights(learner, tmp_path):
    from transformers import AutoModelForCausalLM

    learner.save_policy(str(tmp_path / "policy"))
    reloaded = dict(AutoModelForCausalLM.from_pretrained(tmp_path / "policy").named_parameters())
    for name, p in learner.engine.module.named_parameters():
        assert torch.equal(reloaded[name], p.detach()), name
