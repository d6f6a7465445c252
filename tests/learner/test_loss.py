"""policy_loss: masking, KL estimators, truncated importance weights and the token-mean normalisation."""

import math

import pytest
import torch

from learner.loss import policy_loss


def random_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shape = (2, 6)
    return {
        "policy_logp": -torch.rand(shape, generator=generator) * 3,
        "behavior_logp": -torch.rand(shape, generator=generator) * 3,
        "ref_logp": -torch.rand(shape, generator=generator) * 3,
        "advantage": torch.randn(shape, generator=generator),
        "action_mask": torch.tensor([[0, 1, 1, 0, 1, 0], [0, 0, 1, 1, 1, 1]], dtype=torch.bool),
    }


def loss_and_grad(batch: dict[str, torch.Tensor], **kwargs) -> tuple[torch.Tensor, dict, torch.Tensor]:
    policy_logp = batch["policy_logp"].clone().requires_grad_()
    loss, metrics = policy_loss(
        policy_logp,
        batch["behavior_logp"],
        batch["ref_logp"],
        batch["advantage"],
        batch["action_mask"],
        max_importance_ratio=2.0,
        kl_coef=0.1,
        **kwargs,
    )
    loss.backward()
    return loss.detach(), metrics, policy_logp.grad


@pytest.mark.parametrize("kl_estimator", ["k1", "k2", "k3"])
def test_loss_ignores_non_action_tokens(kl_estimator):
    batch = random_batch()
    loss, metrics, grad = loss_and_grad(batch, kl_estimator=kl_estimator)
    masked = ~batch["action_mask"]
    perturbed = {key: value.clone() for key, value in batch.items()}
    perturbed["policy_logp"][masked] = torch.tensor([math.inf, -math.inf, math.nan, 5.0, 1e30])
    perturbed["behavior_logp"][masked] = math.nan
    perturbed["ref_logp"][masked] = -math.inf
    perturbed["advantage"][masked] = torch.tensor([math.nan, math.inf, -math.inf, 1e30, 3.0])
    loss_p, metrics_p, grad_p = loss_and_grad(perturbed, kl_estimator=kl_estimator)
    assert torch.isfinite(loss)
    assert loss_p == loss
    assert metrics_p == metrics
    assert torch.equal(grad_p, grad)
    assert torch.all(grad[masked] == 0)


def test_loss_with_unit_ratio_and_zero_advantage_is_kl_coef_times_mean_kl():
    batch = random_batch()
    batch["behavior_logp"] = batch["policy_logp"].clone()
    batch["advantage"] = torch.zeros_like(batch["advantage"])
    loss, metrics, _ = loss_and_grad(batch)
    mask = batch["action_mask"]
    d = batch["ref_logp"][mask] - batch["policy_logp"][mask]
    mean_k3 = (torch.exp(d) - d - 1).mean()
    torch.testing.assert_close(loss, 0.1 * mean_k3)
    assert metrics["loss/policy"] == 0.0
    assert metrics["loss/ratio_mean"] == 1.0
    assert metrics["loss/kl"] == pytest.approx(float(mean_k3))
    assert metrics["tokens"] == 7.0


@pytest.mark.parametrize(
    ("kl_estimator", "expected"),
    [("k1", 0.5), ("k2", 0.125), ("k3", math.exp(-0.5) + 0.5 - 1)],
)
def test_kl_estimator_matches_hand_value(kl_estimator, expected):
    # policy -1.0, ref -1.5: policy - ref = 0.5.
    policy = torch.tensor([[-1.0]])
    loss, metrics = policy_loss(
        policy,
        policy,
        torch.tensor([[-1.5]]),
        torch.zeros(1, 1),
        torch.ones(1, 1, dtype=torch.bool),
        max_importance_ratio=2.0,
        kl_coef=1.0,
        kl_estimator=kl_estimator,
    )
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert metrics["loss/kl"] == pytest.approx(expected, rel=1e-6)


def test_importance_weight_is_truncated_and_carries_no_gradient():
    # pi_theta / pi_behavior per token: 3.0 (truncated to 2), 0.5, 1.0.
    ratio = torch.tensor([[3.0, 0.5, 1.0]])
    advantage = torch.tensor([[1.0, -2.0, 0.5]])
    policy_logp = torch.log(ratio).requires_grad_()
    loss, metrics = policy_loss(
        policy_logp,
        torch.zeros_like(ratio),
        torch.zeros_like(ratio),
        advantage,
        torch.ones_like(ratio, dtype=torch.bool),
        max_importance_ratio=2.0,
        kl_coef=0.0,
    )
    # Per-token pg = -w A: -2.0, 1.0, -0.5; the gradient w.r.t. logp is the same -w A (REINFORCE).
    assert float(loss.detach()) == pytest.approx(-1.5 / 3)
    assert metrics["loss/policy"] == pytest.approx(-1.5 / 3)
    assert metrics["loss/ratio_mean"] == pytest.approx(4.5 / 3)
    assert metrics["loss/truncated_fraction"] == pytest.approx(1 / 3)
    loss.backward()
    torch.testing.assert_close(policy_logp.grad, torch.tensor([[-2.0, 1.0, -0.5]]) / 3)


def test_on_policy_gradient_is_the_plain_policy_gradient():
    batch = random_batch(seed=5)
    batch["behavior_logp"] = batch["policy_logp"].clone()
    policy_logp = batch["policy_logp"].clone().requires_grad_()
    loss, _ = policy_loss(
        policy_logp,
        batch["behavior_logp"],
        batch["ref_logp"],
        batch["advantage"],
        batch["action_mask"],
        max_importance_ratio=1.0,
        kl_coef=0.0,
    )
    loss.backward()
    mask = batch["action_mask"]
    expected = torch.where(mask, -batch["advantage"], torch.zeros_like(batch["advantage"])) / int(mask.sum())
    torch.testing.assert_close(policy_logp.grad, expected)


def test_policy_loss_microbatch_losses_sum_to_full_batch_token_mean():
    batch = random_batch(seed=3)
    kwargs = {"max_importance_ratio": 2.0, "kl_coef": 0.1}
    args = [batch[k] for k in ("policy_logp", "behavior_logp", "ref_logp", "advantage", "action_mask")]
    full, _ = policy_loss(*args, **kwargs)
    num_tokens = float(batch["action_mask"].sum())
    parts = [policy_loss(*[a[rows] for a in args], num_tokens=num_tokens, **kwargs)[0] for rows in ([0], [1])]
    torch.testing.assert_close(sum(parts), full)


def test_policy_loss_without_action_tokens_is_zero():
    batch = random_batch()
    batch["action_mask"] = torch.zeros_like(batch["action_mask"])
    loss, metrics, grad = loss_and_grad(batch)
    assert float(loss) == 0.0
    assert metrics["tokens"] == 0.0 and metrics["loss/kl"] == 0.0
    assert torch.all(grad == 0)


def test_policy_loss_rejects_unknown_kl_estimator_by_name():
    batch = random_batch()
    with pytest.raises(ValueError, match=r"kl_estimator 'k4' is not one of k1, k2, k3"):
        loss_and_grad(batch, kl_estimator="k4")
