"""Learner and Scorer in-process (DeepSpeed ZeRO-2, a gloo world of one) on the tiny model."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from actors.trajectory import Trajectory, from_ipc, ragged, to_ipc, to_table, with_columns
from learner.advantage import step_sums
from learner.config import LearnerConfig
from learner.logp import sequence_logp

CFG = LearnerConfig(
    model="tiny-random",
    dtype="float32",
    batch_size=4,
    group_size=2,
    microbatch_tokens=64,
    lr=1e-3,
    beta=0.5,
    prm_lr=1e-3,
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

    learner = Learner(CFG, model_dir=tiny_model_dir, temperature=0.7, rank=0, world_size=1, seed=0, num_updates=4)
    learner.setup("127.0.0.1", free_port())
    return learner


def test_untrained_prm_gives_exactly_zero_progress_advantage(scorer):
    # pi_phi starts as the reference: same weights, same code path, so the ratio is exactly 1.
    scored, metrics = scorer.score(_batch())
    assert all(np.all(p == 0.0) for p in ragged(from_ipc(scored), "progress_adv"))
    assert metrics["score/prm_loss"] == pytest.approx(4 * np.log(2) / 4, rel=1e-5)  # BCE of logit 0


def test_untrained_prm_is_exactly_the_reference_in_bf16_too(tiny_model_dir):
    """On CPU the reference's linear weights are stored in bf16 once while the PRM's are cast by autocast on the
    fly: the two must still agree bit for bit, or an untrained PRM would score noise."""
    from dataclasses import replace

    from learner.scorer import Scorer

    scorer = Scorer(replace(CFG, dtype="bfloat16"), model_dir=tiny_model_dir, temperature=0.7, seed=0)
    assert scorer.ref.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    scored, _ = scorer.score(_batch())
    assert all(np.all(p == 0.0) for p in ragged(from_ipc(scored), "progress_adv"))


def test_progress_advantage_is_beta_times_step_sum_of_prm_minus_ref_logratio(scorer):
    scorer.score(_batch(seed=1))  # one PRM update away from the reference
    batch = _batch(seed=2)
    table = from_ipc(batch)
    tokens = ragged(table, "tokens")
    # the expected values, from the PRM before this call's update, on every token
    prm = sequence_logp(scorer.prm.module, tokens, temperature=0.7)
    ref = sequence_logp(scorer.ref, tokens, temperature=0.7)
    scored = from_ipc(scorer.score(batch)[0])
    for b, (progress, index, mask) in enumerate(
        zip(ragged(scored, "progress_adv"), ragged(table, "step_index"), ragged(table, "action_mask"))
    ):
        diff = np.where(mask, prm[b] - ref[b], 0.0)
        np.testing.assert_allclose(progress, 0.5 * step_sums(diff, index, 2), atol=1e-5)
        assert np.abs(progress).max() > 0
    masks = ragged(table, "action_mask")
    np.testing.assert_allclose(  # ref_logp is the reference's on action tokens, 0 elsewhere
        np.concatenate(ragged(scored, "ref_logp")),
        np.concatenate([np.where(m, r, 0.0) for r, m in zip(ref, masks)]),
        atol=1e-6,
    )


def _on_policy(learner, batch: bytes, advantage: float) -> bytes:
    """The batch with behaviour = reference = the learner's own log-probs, and a constant advantage."""
    table = from_ipc(batch)
    tokens = ragged(table, "tokens")
    own = sequence_logp(learner.engine.module, tokens, temperature=0.7)
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
    assert metrics["loss/lr"] == CFG.lr  # constant schedule
    assert 0.0 < metrics["loss/entropy"] <= np.log(learner.engine.module.config.vocab_size)
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


def _perturbed_copy(model_dir: str, out, seed: int) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return str(out)


def _expected_progress(numerator, denominator, table, beta: float) -> list[np.ndarray]:
    tokens = ragged(table, "tokens")
    diff = [
        n - d
        for n, d in zip(
            sequence_logp(numerator, tokens, temperature=0.7), sequence_logp(denominator, tokens, temperature=0.7)
        )
    ]
    return [
        beta * step_sums(np.where(mask, diff[b], 0.0), index, 2)
        for b, (mask, index) in enumerate(zip(ragged(table, "action_mask"), ragged(table, "step_index")))
    ]


def test_frozen_scorer_scores_with_its_pair_against_the_reference(tiny_model_dir, tmp_path):
    from dataclasses import replace

    from learner.scorer import Scorer

    pair = _perturbed_copy(tiny_model_dir, tmp_path / "rl", seed=5)
    scorer = Scorer(
        replace(CFG, scorer="frozen", scorer_policy=pair), model_dir=tiny_model_dir, temperature=0.7, seed=0
    )
    table = from_ipc(_batch())
    scored = from_ipc(scorer.score(_batch())[0])
    expected = _expected_progress(scorer.numerator, scorer.ref, table, beta=0.5)
    for got, want in zip(ragged(scored, "progress_adv"), expected):
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert np.abs(got).max() > 0


def test_frozen_scorer_rejects_a_pair_with_another_tokenizer(tiny_model_dir, tmp_path):
    from dataclasses import replace

    from learner.scorer import Scorer

    other = str(tmp_path / "other")
    from cluster.models import build_tiny_model

    build_tiny_model(tmp_path / "other")
    path = tmp_path / "other" / "tokenizer.json"
    tokenizer = json.loads(path.read_text())
    vocab = tokenizer["model"]["vocab"]
    first, second = list(vocab)[100:102]
    vocab[first], vocab[second] = vocab[second], vocab[first]  # same tokens, other ids
    path.write_text(json.dumps(tokenizer))
    with pytest.raises(ValueError, match="different tokenizer"):
        Scorer(replace(CFG, scorer="frozen", scorer_policy=other), model_dir=tiny_model_dir, temperature=0.7, seed=0)


def test_lagged_scorer_uses_the_policy_of_lag_versions_ago(tiny_model_dir, tmp_path):
    import threading
    from dataclasses import replace

    from transformers import AutoModelForCausalLM

    from actors.broadcast import weight_sync_group
    from learner.broadcast import plan_buckets, send
    from learner.learner import free_port
    from learner.scorer import Scorer

    scorer = Scorer(replace(CFG, scorer="lagged", scorer_lag=1), model_dir=tiny_model_dir, temperature=0.7, seed=0)
    assert all(np.all(p == 0.0) for p in ragged(from_ipc(scorer.score(_batch())[0]), "progress_adv"))
    port, groups = free_port(), {}
    joiner = threading.Thread(target=lambda: groups.update(tx=weight_sync_group("127.0.0.1", port, 0, 2)))
    joiner.start()
    scorer.connect_learner("127.0.0.1", port, 1, 2)
    joiner.join(timeout=60)
    versions = [
        AutoModelForCausalLM.from_pretrained(_perturbed_copy(tiny_model_dir, tmp_path / f"v{v}", seed=v))
        for v in (1, 2)
    ]
    for version, model in enumerate(versions, start=1):  # broadcast version 1, then version 2
        weights = {name: p.detach() for name, p in model.named_parameters()}
        buckets = plan_buckets(weights.items(), bucket_mb=0.5)
        sender = threading.Thread(target=send, args=(groups["tx"][1], buckets, weights))
        sender.start()
        scorer.receive_weights(buckets, version)
        sender.join(timeout=60)
    # after version 2 with a lag of 1 the numerator is version 1
    for name, p in versions[0].named_parameters():
        assert torch.equal(dict(scorer.numerator.named_parameters())[name], p), name


def test_rendezvous_store_listens_on_its_address_only():
    from actors.broadcast import tcp_store
    from learner.learner import free_port

    port = free_port()
    store = tcp_store("127.0.0.1", port, 1, is_master=True, timeout_s=10)
    store.set("k", "v")
    # /proc/net/tcp: "local_address" is hex ip:port; state 0A is LISTEN
    listening = [
        line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:] if line.split()[3] == "0A"
    ]
    assert [address for address in listening if address.endswith(f":{port:04X}")] == [f"0100007F:{port:04X}"]


@pytest.mark.parametrize(
    ("schedule", "factors"),
    [
        ("constant", [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]),
        ("linear", [0.5, 1.0, 1.0, 0.775, 0.55, 0.325]),
        (
            "cosine",
            [0.5, 1.0, 1.0, 0.1 + 0.45 * (1 + np.cos(np.pi / 4)), 0.55, 0.1 + 0.45 * (1 + np.cos(3 * np.pi / 4))],
        ),
    ],
)
def test_learning_rate_schedule_warms_up_then_decays_to_its_floor(schedule, factors):
    from learner.learner import lr_factor

    got = [lr_factor(u, schedule, warmup=2, num_updates=6, min_ratio=0.1) for u in range(6)]
    np.testing.assert_allclose(got, factors, atol=1e-12)
    assert lr_factor(0, schedule, warmup=0, num_updates=6, min_ratio=0.1) == 1.0  # no warmup: the peak at once


def test_learner_applies_the_schedule_update_by_update(tiny_model_dir):
    from dataclasses import replace

    from learner.learner import Learner, free_port, lr_factor

    cfg = replace(CFG, lr_schedule="cosine", lr_warmup_iterations=1, lr_min_ratio=0.0)
    learner = Learner(cfg, model_dir=tiny_model_dir, temperature=0.7, rank=0, world_size=1, seed=0, num_updates=3)
    learner.setup("127.0.0.1", free_port())
    rates = [learner.update(_on_policy(learner, _batch(), advantage=1.0))["loss/lr"] for _ in range(3)]
    np.testing.assert_allclose(rates, [cfg.lr * lr_factor(u, "cosine", 1, 3, 0.0) for u in range(3)], rtol=1e-12)
    assert rates == [cfg.lr, cfg.lr, cfg.lr * 0.5]
