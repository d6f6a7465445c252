"""Hand-computed golden examples for each function in learner/advantage.py."""

import itertools
import math

import numpy as np
import pytest

from learner.advantage import outcome_advantage, progress_advantage, step_advantage, step_sums
from learner.aggregate import auroc


def test_outcome_advantage_normalises_within_each_group():
    outcome = np.array([1.0, 0.0, 2.0, 1.0, 0.0, 0.0])
    group_ids = ["a", "b", "b", "a", "b", "c"]
    adv = outcome_advantage(outcome, group_ids, eps=0.0)
    # a = [1, 1]: uniform. b = [0, 2, 0]: mean 2/3, population std sqrt(8/9). c: a single trajectory.
    std_b = math.sqrt(8 / 9)
    expected = [0.0, -(2 / 3) / std_b, (4 / 3) / std_b, 0.0, -(2 / 3) / std_b, 0.0]
    np.testing.assert_allclose(adv, expected, rtol=1e-12)


def test_outcome_advantage_applies_eps_to_the_std():
    adv = outcome_advantage(np.array([1.0, 0.0]), ["g", "g"], eps=0.5)
    np.testing.assert_allclose(adv, [0.5, -0.5])


def test_outcome_advantage_is_zero_for_uniform_group():
    adv = outcome_advantage(np.full(3, 0.1), ["g"] * 3)
    assert adv.tolist() == [0.0, 0.0, 0.0]


def test_progress_advantage_equals_beta_times_token_sum_of_logratios():
    scorer_logp = np.array([0.0, -1.0, -2.0, -0.5, -3.0])
    ref_logp = np.array([0.0, -1.5, -1.0, -1.0, -3.0])
    step_index = np.array([-1, 0, 0, 1, -1])
    step_logratio = step_sums(scorer_logp - ref_logp, step_index, num_steps=2)
    (progress_adv,) = progress_advantage([step_logratio], beta=0.1)
    np.testing.assert_allclose(progress_adv, [0.1 * (0.5 - 1.0), 0.1 * 0.5])


def test_step_sums_gives_empty_step_zero_and_keeps_it():
    token_values = np.array([0.5, 1.0, 2.0, 3.0, 4.0, 9.0])
    step_index = np.array([-1, 0, 0, 2, 2, -1])
    assert step_sums(token_values, step_index, num_steps=4).tolist() == [3.0, 0.0, 7.0, 0.0]


def test_step_sums_of_trajectory_without_action_tokens_is_zeros():
    assert step_sums(np.array([1.0, 2.0]), np.array([-1, -1]), num_steps=2).tolist() == [0.0, 0.0]


def test_step_advantage_centres_scales_clips_and_adds_outcome():
    outcome_adv = np.array([0.5, -0.5, 0.25])
    progress_adv = [np.array([1.0, 3.0]), np.array([2.0]), np.array([5.0])]
    group_ids = ["g", "g", "h"]
    adv = step_advantage(outcome_adv, progress_adv, group_ids, coef=0.5, clip=0.5)
    # Group g steps [1, 3, 2]: mean 2, centred [-1, 1, 0], clipped to [-0.5, 0.5, 0], times 0.5.
    # Group h has a single step: its centred term is 0.
    np.testing.assert_allclose(adv[0], [0.5 - 0.25, 0.5 + 0.25])
    np.testing.assert_allclose(adv[1], [-0.5])
    np.testing.assert_allclose(adv[2], [0.25])


def test_step_advantage_without_clipping_is_the_centred_progress_unscaled_by_std():
    progress_adv = [np.array([1.0, 3.0]), np.array([2.0])]
    adv = step_advantage(np.array([0.5, -0.5]), progress_adv, ["g", "g"], coef=2.0, clip=10.0)
    np.testing.assert_allclose(adv[0], [0.5 - 2.0, 0.5 + 2.0])
    np.testing.assert_allclose(adv[1], [-0.5])


def test_step_advantage_with_zero_coef_equals_outcome_advantage():
    outcome_adv = np.array([1.5, -1.5, 0.0])
    progress_adv = [np.array([0.3, -2.0, 7.0]), np.array([]), np.array([4.0])]
    adv = step_advantage(outcome_adv, progress_adv, ["g", "g", "h"], coef=0.0, clip=1.0)
    assert [a.tolist() for a in adv] == [[1.5, 1.5, 1.5], [], [0.0]]


def test_step_advantage_of_uniform_group_is_outcome_advantage():
    adv = step_advantage(np.array([1.0, -1.0]), [np.full(2, 0.1), np.full(3, 0.1)], ["g", "g"], coef=1.0, clip=5.0)
    assert [a.tolist() for a in adv] == [[1.0, 1.0], [-1.0, -1.0, -1.0]]


def test_step_advantage_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="one entry per trajectory"):
        step_advantage(np.zeros(2), [np.zeros(1)], ["g", "g"], coef=1.0, clip=1.0)


def pairwise_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels.astype(bool)], scores[~labels.astype(bool)]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auroc_golden_example():
    assert auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75


def test_auroc_matches_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.integers(0, 5, size=17).astype(float)
        labels = rng.integers(0, 2, size=17)
        if 0 < labels.sum() < len(labels):
            assert auroc(scores, labels) == pytest.approx(pairwise_auroc(scores, labels), abs=1e-12)


def test_auroc_is_nan_for_one_class():
    assert math.isnan(auroc(np.array([0.2, 0.9]), np.array([1, 1])))
    assert math.isnan(auroc(np.array([]), np.array([])))


def test_failure_gating_spares_steps_before_the_predicted_failure():
    # Trajectory 0 failed (outcome advantage -1); its cumulative progress [0.5, 0.7, -0.3, -0.2] is
    # lowest at step 2, so steps 0-1 lose the outcome term. Trajectory 1 succeeded: never gated.
    progress = [np.array([0.5, 0.2, -1.0, 0.1]), np.array([0.1, 0.1])]
    outcome_adv = np.array([-1.0, 1.0])
    gated = step_advantage(outcome_adv, progress, ["g", "h"], coef=0.0, clip=1.0, failure_gating=True)
    assert gated[0].tolist() == [0.0, 0.0, -1.0, -1.0] and gated[1].tolist() == [1.0, 1.0]
    plain = step_advantage(outcome_adv, progress, ["g", "h"], coef=0.0, clip=1.0)
    assert plain[0].tolist() == [-1.0] * 4
