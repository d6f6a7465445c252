"""learner/aggregate.py on hand-computed values: aggregations, step scores, FA predictors, BoN/UQ/FA metrics."""

import math

import numpy as np
import pytest

from learner.aggregate import (
    aggregate_steps,
    aggregate_tokens,
    best_of_n,
    evaluate_bon,
    evaluate_fa,
    evaluate_uq,
    predict_failure,
    progress_scores,
    span_values,
    spearman,
    trajectory_score,
)

TOKENS = np.array([-1.0, -2.0, -0.5, -3.0])
STEPS = [0.5, -1.0, 2.0, -3.0, 1.0]


@pytest.mark.parametrize(
    "name, expected", [("sum", -6.5), ("mean", -1.625), ("min", -3.0), ("max", -0.5), ("last", -3.0)]
)
def test_aggregate_tokens_golden_values_and_zero_on_empty(name, expected):
    assert aggregate_tokens(TOKENS, name) == expected
    assert aggregate_tokens(np.zeros(0), name) == 0.0


@pytest.mark.parametrize(
    "name, expected",
    [("mean", -0.1), ("sum", -0.5), ("last", 1.0), ("max", 2.0), ("min", -3.0), ("bottom10", -3.0)],
)
def test_aggregate_steps_golden_values_and_zero_on_empty(name, expected):
    assert aggregate_steps(STEPS, name) == pytest.approx(expected, abs=1e-12)
    assert aggregate_steps([], name) == 0.0


@pytest.mark.parametrize("num_steps, k", [(1, 1), (9, 1), (10, 1), (11, 2), (20, 2), (21, 3), (30, 3), (31, 4)])
def test_bottom10_is_mean_of_lowest_max_1_ceil_tenth_of_steps(num_steps, k):
    values = np.arange(num_steps, dtype=float)[::-1]  # the lowest k are 0 .. k-1
    assert aggregate_steps(values, "bottom10") == pytest.approx((k - 1) / 2)


@pytest.mark.parametrize(
    "call",
    [
        lambda: aggregate_tokens(TOKENS, "median"),
        lambda: aggregate_steps(STEPS, "median"),
        lambda: progress_scores([TOKENS], [TOKENS], [True], "median", 1.0),
        lambda: trajectory_score([1.0], "median"),
        lambda: predict_failure([1.0], "median"),
    ],
)
def test_unknown_name_raises_value_error_naming_it_and_the_choices(call):
    with pytest.raises(ValueError, match=r"'median'.*choose one of"):
        call()


def test_progress_scores_aggregate_each_model_then_subtract():
    policy, ref = np.array([-1.0, -5.0]), np.array([-3.0, -2.0])
    for name, expected, of_differences in [("min", -2.0, -3.0), ("max", 1.0, 2.0)]:
        assert progress_scores([policy], [ref], [True], name, 1.0) == [expected]
        assert aggregate_tokens(policy - ref, name) == of_differences  # the order matters for min and max
    # sum, mean and last are linear in the values: both orders agree (PAPER.md §3.3 lists last with min/max,
    # but the last token's difference is the difference of the last tokens).
    for name in ("sum", "mean", "last"):
        assert progress_scores([policy], [ref], [True], name, 1.0) == [aggregate_tokens(policy - ref, name)]


def test_progress_scores_scale_by_beta_and_fall_back_to_policy_logp_without_ref():
    policy, ref = np.array([-1.0, -2.0]), np.array([-2.0, -2.0])
    assert progress_scores([policy], [ref], [True], "mean", 2.0) == [1.0]
    assert progress_scores([policy], None, [True], "mean", 2.0) == [-3.0]


def test_empty_action_spans_score_zero_and_stay_in_the_step_count():
    empty = np.zeros(0)
    policy = [empty, np.array([-1.0, -2.0]), empty, np.array([-3.0])]
    ref = [empty, np.array([-2.0, -2.0]), empty, np.array([-1.0])]
    steps = progress_scores(policy, ref, [False, True, True, True], "mean", 1.0)
    assert steps == [None, 0.5, 0.0, -2.0]
    assert trajectory_score(steps, "mean") == pytest.approx(-0.5)  # (0.5 + 0 - 2) / 3
    assert trajectory_score([None, None], "mean") is None  # no action message at all


def test_span_values_skip_token_zero_and_non_action_spans():
    logp = np.array([0.0, -1.0, -2.0, -3.0, -4.0])  # logp[0] is the first token's: it has none
    spans = [(0, 2), (2, 4), (4, 5), (5, 5)]
    out = span_values(logp, spans, [True, False, True, True])
    assert [list(v) for v in out] == [[-1.0], [], [-4.0], []]


@pytest.mark.parametrize("predictor, expected", [("min_cumulative", 1), ("sharpest_drop", 3), ("sharpest_abs_drop", 5)])
def test_failure_predictors_on_a_hand_example(predictor, expected):
    # running sums over valid messages 1..5: 2, 3, 2.5, 5.5, 5.5; changes: -1, -1.5, +3.5, -3
    assert predict_failure([None, 2.0, 1.0, -0.5, 3.0, 0.0], predictor) == expected


def test_min_cumulative_counts_non_action_messages_as_zero_and_falls_back_to_zero():
    assert predict_failure([None, -1.0, None, 0.5, -0.4], "min_cumulative") == 1  # -1, -0.5, -0.9
    assert predict_failure([None, None], "min_cumulative") == 0


def test_sharpest_drop_falls_back_to_first_valid_step_when_none_is_negative():
    assert predict_failure([None, 0.5, 0.0, 1.0], "sharpest_drop") == 1
    assert predict_failure([None, None], "sharpest_drop") == 0


def test_sharpest_abs_drop_fallbacks_and_zero_change_counts_as_a_drop():
    assert predict_failure([None, -1.0], "sharpest_abs_drop") == 1  # one valid step
    assert predict_failure([None, 0.1, None, 0.2, 0.3], "sharpest_abs_drop") == 1  # only rises
    assert predict_failure([None, 0.5, 0.5, 1.0], "sharpest_abs_drop") == 2  # a change of 0 is <= 0
    assert predict_failure([None, None], "sharpest_abs_drop") == 0


def test_evaluate_fa_accuracy_and_mae_skip_records_without_mistake_step():
    steps = [[None, 2.0, 1.0, -0.5, 3.0, 0.0], [None, -1.0, 1.0], [None, 1.0]]
    out = evaluate_fa(steps, [3, 2, None])
    assert out["sharpest_drop"] == {"accuracy": 0.5, "mae": 0.5, "n": 2}  # predicts 3 and 1
    assert out["min_cumulative"] == {"accuracy": 0.0, "mae": 1.5, "n": 2}  # predicts 1 and 1


def test_best_of_n_ties_go_to_the_lowest_index_and_missing_scores_rank_last():
    assert best_of_n(["a", "a", "a", "b", "b"], [1.0, 2.0, 2.0, None, -1.0]) == {"a": 1, "b": 4}
    assert best_of_n(["a", "a"], [float("nan"), -5.0]) == {"a": 1}


def test_evaluate_bon_golden_values():
    out = evaluate_bon(["a", "a", "a", "b", "b"], [1.0, 2.0, 2.0, None, -1.0], [0.0, 1.0, 0.0, 1.0, None])
    assert out["num_tasks"] == 2
    assert out["bon_success_rate"] == 0.5 and out["bon_mean_reward"] == 0.5  # picks a:1 (1.0) and b:4 (None -> 0)
    assert out["pass_at_n"] == 1.0
    assert out["mean_at_n"] == pytest.approx((1 / 3 + 1 / 2) / 2)


def _brute_auroc(scores, positive):
    pairs = [(p, n) for p in scores[positive] for n in scores[~positive]]
    return np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])


def _brute_spearman(x, y):
    def ranks(v):  # 1 + number below + half the number of other equal values
        return np.array([1 + np.sum(v < a) + (np.sum(v == a) - 1) / 2 for a in v])

    rx, ry = ranks(np.asarray(x)), ranks(np.asarray(y))
    return np.sum((rx - rx.mean()) * (ry - ry.mean())) / math.sqrt(
        np.sum((rx - rx.mean()) ** 2) * np.sum((ry - ry.mean()) ** 2)
    )


def test_evaluate_uq_matches_brute_force_auroc_and_spearman_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 40).astype(float)  # many ties
    rewards = rng.choice([0.0, 0.25, 1.0], 40)
    out = evaluate_uq(list(scores), list(rewards))
    assert out["n"] == 40
    assert out["auroc"] == pytest.approx(_brute_auroc(scores, rewards > 0.5))
    assert out["spearman"] == pytest.approx(_brute_spearman(scores, rewards))
    assert spearman(scores, scores) == pytest.approx(1.0)


def test_evaluate_uq_leaves_out_missing_values_and_is_nan_for_one_reward_value():
    out = evaluate_uq([0.3, None, 0.1, 0.2], [1.0, 0.0, None, 0.0])
    assert out == {"auroc": 1.0, "spearman": pytest.approx(1.0), "n": 2}
    same = evaluate_uq([0.3, 0.1], [1.0, 1.0])
    assert math.isnan(same["auroc"]) and math.isnan(same["spearman"]) and same["n"] == 2


def test_aggregate_module_imports_numpy_only():
    import ast
    from pathlib import Path

    import learner.aggregate

    tree = ast.parse(Path(learner.aggregate.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert {name.split(".")[0] for name in names} <= {"math", "collections", "numpy", "learner"}
