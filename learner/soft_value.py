"""Exact soft-optimal solution of a small finite-horizon MDP, for checking the progress advantage.

Data flow: env model (envs/mdp.py) + reference probabilities -> [soft value] -> A*, the target that
beta * log pi_theta / pi_ref should match (benchmarks/theory_check.py). Pure numpy.
Shapes are the MDP's: H steps of the horizon, S states, A actions (here S counts states, not steps).
"""

import numpy as np


def soft_value_iteration(
    transitions: np.ndarray, rewards: np.ndarray, ref_probs: np.ndarray, beta: float, horizon: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward induction of the soft Bellman equations, PAPER.md §2.2; returns (Q, V, pi_star).

    transitions is (S, A, S) with rows P(s'|s, a) summing to 1, rewards (S, A), ref_probs the
    reference policy pi_ref(a|s) as (S, A) for every step or (H, S, A) per step t = 0..H-1 (the
    rendered state names its step, so the reference may differ by step). With V*_H = 0, for t = H-1..0:
        Q*_t(s, a) = r(s, a) + sum_s' P(s'|s, a) V*_{t+1}(s')
        V*_t(s)    = beta * log sum_a pi_ref_t(a|s) exp(Q*_t(s, a) / beta)
        pi*_t(a|s) = pi_ref_t(a|s) exp((Q*_t(s, a) - V*_t(s)) / beta)
    Q and pi_star are (H, S, A), V is (H, S). An action with pi_ref = 0 gets pi* = 0.
    """
    transitions, rewards = np.asarray(transitions, dtype=np.float64), np.asarray(rewards, dtype=np.float64)
    num_states, num_actions = rewards.shape
    if transitions.shape != (num_states, num_actions, num_states):
        raise ValueError(
            f"transitions must be (S, A, S) = {(num_states, num_actions, num_states)}, got {transitions.shape}"
        )
    if beta <= 0 or horizon < 1:
        raise ValueError(f"beta must be > 0 and horizon >= 1, got beta={beta}, horizon={horizon}")
    ref_probs = np.broadcast_to(np.asarray(ref_probs, dtype=np.float64), (horizon, num_states, num_actions))
    with np.errstate(divide="ignore"):
        log_ref = np.log(ref_probs)  # (H, S, A); -inf where pi_ref = 0

    q = np.zeros((horizon, num_states, num_actions))
    v = np.zeros((horizon, num_states))
    next_v = np.zeros(num_states)  # V*_H = 0
    for t in reversed(range(horizon)):
        q[t] = rewards + transitions @ next_v
        v[t] = beta * _logsumexp(log_ref[t] + q[t] / beta)
        next_v = v[t]
    pi_star = np.exp(log_ref + (q - v[..., None]) / beta)  # (H, S, A)
    return q, v, pi_star


def optimal_advantage(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A*_t(s, a) = Q*_t(s, a) - V*_t(s), PAPER.md §2.2: what beta * log pi*/pi_ref equals; (H, S, A)."""
    return np.asarray(q) - np.asarray(v)[..., None]


def soft_policy_value(
    transitions: np.ndarray,
    rewards: np.ndarray,
    ref_probs: np.ndarray,
    policy: np.ndarray,
    beta: float,
    horizon: int,
) -> np.ndarray:
    """V^pi_t(s) of the KL-regularised objective of PAPER.md §2.1 for any policy, (H, S).

    policy and ref_probs are (S, A) or (H, S, A). V^pi_t(s) = sum_a pi(a|s) [r(s, a) - beta log pi/pi_ref
    + E V^pi_{t+1}(s')], so its mean over start states is J(pi); it equals V* exactly for pi = pi*.
    """
    transitions, rewards = np.asarray(transitions, dtype=np.float64), np.asarray(rewards, dtype=np.float64)
    shape = (horizon, *rewards.shape)
    ref_probs = np.broadcast_to(np.asarray(ref_probs, dtype=np.float64), shape)
    policy = np.broadcast_to(np.asarray(policy, dtype=np.float64), shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        # 0 * log 0 = 0: an action the policy never takes costs no KL.
        kl_terms = np.where(policy > 0, policy * np.log(policy / ref_probs), 0.0)  # (H, S, A)
    v = np.zeros((horizon, rewards.shape[0]))
    next_v = np.zeros(rewards.shape[0])
    for t in reversed(range(horizon)):
        v[t] = (policy[t] * (rewards + transitions @ next_v)).sum(-1) - beta * kl_terms[t].sum(-1)
        next_v = v[t]
    return v


def _logsumexp(x: np.ndarray) -> np.ndarray:
    """log sum exp over the last axis, shifted by the max for stability; rows of -inf give -inf."""
    top = np.max(x, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(x - top).sum(-1)) + top[..., 0]
