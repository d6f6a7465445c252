"""The policy loss: a truncated-importance-weighted policy gradient on action tokens plus a KL penalty.

Data flow: step_advantage (expanded to tokens) + policy_logp + behavior_logp + ref_logp -> [loss] -> update.
Pure torch.
"""

import torch
from torch import Tensor

KL_ESTIMATORS = ("k1", "k2", "k3")


def policy_loss(
    policy_logp: Tensor,
    behavior_logp: Tensor,
    ref_logp: Tensor,
    advantage: Tensor,
    action_mask: Tensor,
    *,
    max_importance_ratio: float,
    kl_coef: float,
    kl_estimator: str = "k3",
    num_tokens: float | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Policy-gradient loss with truncated importance weights and a KL-to-reference term, summed over
    action tokens / num_tokens.

    Implements the learner side of PAPER.md §8.4: `advantage` is A_out + coef * clipped progress
    advantage, broadcast to the tokens of each step. All tensors are (B, T); action_mask is bool and
    True only on tokens the policy sampled. Trajectories may be up to max_staleness policy versions old
    and come from another engine's numerics, so each token's gradient is weighted by
    w = min(pi_theta / pi_behavior, max_importance_ratio), held constant (truncated IS, as in decoupled
    PPO with the proximal policy = the weights before this update: one update per batch makes PPO's clip
    to that policy inert, so it is left out; learner/README.md, decision 11).
    num_tokens defaults to this call's action-token count; pass the global count so microbatches and ranks
    sum to one token mean. Metrics are means over this call's action tokens; with none, loss and metrics are 0.
    """
    if kl_estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_estimator {kl_estimator!r} is not one of {', '.join(KL_ESTIMATORS)}")
    mask = action_mask.bool()
    # Inputs are replaced (not multiplied) on non-action tokens first: observation and padding tokens
    # may hold inf/nan logp, and 0 * inf = nan would leak into the loss and, through exp, the grads.
    policy_logp, behavior_logp, ref_logp, advantage = (
        torch.where(mask, x, torch.zeros_like(x)) for x in (policy_logp, behavior_logp, ref_logp, advantage)
    )

    ratio = torch.exp(policy_logp.detach() - behavior_logp)  # (B, T) pi_theta / pi_behavior
    weight = torch.clamp(ratio, max=max_importance_ratio)  # (B, T) truncated, no gradient
    # exp(logp - logp.detach()) is 1 in value and has the gradient of logp: the REINFORCE term.
    pg = -weight * torch.exp(policy_logp - policy_logp.detach()) * advantage  # (B, T)
    kl = _kl(policy_logp, ref_logp, kl_estimator)  # (B, T)

    count = int(mask.sum())
    per_token = torch.where(mask, pg + kl_coef * kl, torch.zeros_like(pg))  # (B, T)
    loss = per_token.sum() / max(num_tokens if num_tokens is not None else count, 1)

    with torch.no_grad():
        denom = max(count, 1)
        metrics = {
            "loss/policy": float(pg[mask].sum() / denom),
            "loss/kl": float(kl[mask].sum() / denom),
            "loss/ratio_mean": float(ratio[mask].sum() / denom),
            "loss/truncated_fraction": float((mask & (ratio > max_importance_ratio)).sum() / denom),
            "tokens": float(count),
        }
    return loss, metrics


def _kl(policy_logp: Tensor, ref_logp: Tensor, kl_estimator: str) -> Tensor:
    """Per-token estimate of KL(policy || ref) on tokens the policy sampled (Schulman's k1, k2, k3)."""
    if kl_estimator == "k1":
        return policy_logp - ref_logp
    if kl_estimator == "k2":
        return 0.5 * (policy_logp - ref_logp) ** 2
    # k3 is unbiased and never negative, so noise on one token cannot make the penalty negative.
    logratio = ref_logp - policy_logp
    return torch.exp(logratio) - logratio - 1
