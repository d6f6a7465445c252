"""The exact soft-optimal solver: the identity beta * log pi*/pi_ref = A* and its consequences (PAPER.md §2.2, §2.6)."""

import numpy as np
import pytest

from learner.soft_value import optimal_advantage, soft_policy_value, soft_value_iteration

BETA, HORIZON = 0.7, 3


def _hand_built():
    """3 states, 2 actions, stochastic transitions, and a reference that differs by step."""
    transitions = np.array(
        [
            [[0.5, 0.5, 0.0], [0.1, 0.2, 0.7]],
            [[0.0, 0.9, 0.1], [0.3, 0.3, 0.4]],
            [[1.0, 0.0, 0.0], [0.25, 0.25, 0.5]],
        ]
    )  # (S, A, S)
    rewards = np.array([[0.0, 0.4], [1.0, 0.2], [0.3, 0.9]])  # (S, A)
    ref_probs = np.array(
        [
            [[0.5, 0.5], [0.8, 0.2], [0.3, 0.7]],
            [[0.6, 0.4], [0.5, 0.5], [0.1, 0.9]],
            [[0.2, 0.8], [0.7, 0.3], [0.5, 0.5]],
        ]
    )  # (H, S, A)
    return transitions, rewards, ref_probs


def test_logratio_of_soft_optimal_policy_equals_optimal_advantage():
    transitions, rewards, ref_probs = _hand_built()
    q, v, pi_star = soft_value_iteration(transitions, rewards, ref_probs, BETA, HORIZON)
    advantage = optimal_advantage(q, v)
    assert q.shape == pi_star.shape == (HORIZON, 3, 2) and v.shape == (HORIZON, 3)
    np.testing.assert_allclose(BETA * np.log(pi_star / ref_probs), advantage, rtol=0, atol=1e-9)
    np.testing.assert_allclose(pi_star.sum(-1), 1.0, rtol=0, atol=1e-12)
    assert np.ptp(advantage) > 0.1  # the check is not passed by an all-zero advantage


def test_q_satisfies_the_soft_bellman_equation():
    transitions, rewards, ref_probs = _hand_built()
    q, v, _ = soft_value_iteration(transitions, rewards, ref_probs, BETA, HORIZON)
    np.testing.assert_allclose(q[-1], rewards, atol=1e-12)  # V*_H = 0
    for t in range(HORIZON - 1):
        np.testing.assert_allclose(q[t], rewards + transitions @ v[t + 1], atol=1e-12)
    # E_{a~pi_ref}[exp(A*/beta)] = 1 (PAPER.md §2.6, point 5).
    np.testing.assert_allclose((ref_probs * np.exp((q - v[..., None]) / BETA)).sum(-1), 1.0, atol=1e-12)


def test_mean_optimal_advantage_under_pi_star_is_beta_kl_and_nonnegative():
    transitions, rewards, ref_probs = _hand_built()
    q, v, pi_star = soft_value_iteration(transitions, rewards, ref_probs, BETA, HORIZON)
    mean_advantage = (pi_star * optimal_advantage(q, v)).sum(-1)  # (H, S)
    kl = (pi_star * np.log(pi_star / ref_probs)).sum(-1)  # (H, S)
    np.testing.assert_allclose(mean_advantage, BETA * kl, atol=1e-12)
    assert (mean_advantage >= 0).all() and (mean_advantage > 0).any()


def test_pi_star_maximises_the_kl_regularised_objective():
    transitions, rewards, ref_probs = _hand_built()
    _, v, pi_star = soft_value_iteration(transitions, rewards, ref_probs, BETA, HORIZON)
    value = soft_policy_value(transitions, rewards, ref_probs, pi_star, BETA, HORIZON)
    np.testing.assert_allclose(value, v, atol=1e-12)  # V^{pi*} = V*
    rng = np.random.default_rng(0)
    for _ in range(20):
        other = np.clip(pi_star + 0.05 * rng.standard_normal(pi_star.shape), 1e-3, None)
        other /= other.sum(-1, keepdims=True)
        assert (soft_policy_value(transitions, rewards, ref_probs, other, BETA, HORIZON) <= v + 1e-12).all()


def test_one_step_case_matches_hand_computation():
    # One state, rewards (1, 0), uniform reference, beta = 1:
    # V* = log(0.5 e + 0.5), pi*(a0) = e / (e + 1), A*(a0) = 1 - V*, A*(a1) = -V*.
    transitions = np.ones((1, 2, 1))
    q, v, pi_star = soft_value_iteration(transitions, np.array([[1.0, 0.0]]), np.array([[0.5, 0.5]]), 1.0, 1)
    expected_v = np.log(0.5 * np.e + 0.5)
    assert v[0, 0] == pytest.approx(expected_v, abs=1e-12)
    assert pi_star[0, 0, 0] == pytest.approx(np.e / (np.e + 1), abs=1e-12)
    np.testing.assert_allclose(optimal_advantage(q, v)[0, 0], [1 - expected_v, -expected_v], atol=1e-12)


def test_reference_with_zero_mass_gives_pi_star_zero():
    transitions = np.ones((1, 3, 1))
    _, _, pi_star = soft_value_iteration(transitions, np.array([[5.0, 0.0, 1.0]]), np.array([[0.0, 0.5, 0.5]]), 1.0, 2)
    assert (pi_star[:, 0, 0] == 0).all() and np.allclose(pi_star.sum(-1), 1.0)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="transitions must be"):
        soft_value_iteration(np.ones((2, 2, 3)), np.zeros((2, 2)), np.full((2, 2), 0.5), 1.0, 1)
