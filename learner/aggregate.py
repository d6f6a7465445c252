"""Aggregations of the progress-advantage scorer, as the paper's official code computes them.

Data flow: per-token logp of both models -> [aggregate] -> per-step scores -> trajectory score -> the three
applications (best-of-N, uncertainty, failure attribution). Pure numpy; `freelunch score` calls it.
Definitions follow PAPER.md §3.3-3.5 and §4; names of aggregations and predictors are the paper's.
"""

import math
from collections.abc import Sequence

import numpy as np

TOKEN_AGGS = ("sum", "mean", "min", "max", "last")
STEP_AGGS = ("mean", "sum", "last", "max", "min", "bottom10")
PREDICTORS = ("min_cumulative", "sharpest_drop", "sharpest_abs_drop")


def _check(name: str, choices: tuple[str, ...], what: str) -> None:
    if name not in choices:
        raise ValueError(f"unknown {what} {name!r}; choose one of {', '.join(choices)}")


def aggregate_tokens(values: np.ndarray, name: str) -> float:
    """One model's logp over a step's action tokens -> one number (PAPER.md §3.4); empty span -> 0.0."""
    _check(name, TOKEN_AGGS, "token aggregation")
    values = np.asarray(values, dtype=np.float64)  # (N,)
    if values.size == 0:
        return 0.0
    if name == "sum":
        return float(values.sum())
    if name == "mean":
        return float(values.mean())
    if name == "min":
        return float(values.min())
    if name == "max":
        return float(values.max())
    return float(values[-1])


def aggregate_steps(values: Sequence[float], name: str) -> float:
    """Step scores of one trajectory -> the trajectory score (PAPER.md §3.4); no steps -> 0.0.

    bottom10 is the mean of the lowest k = max(1, ceil(0.1 * S)) steps.
    """
    _check(name, STEP_AGGS, "step aggregation")
    values = np.asarray(values, dtype=np.float64)  # (S,)
    if values.size == 0:
        return 0.0
    if name == "mean":
        return float(values.mean())
    if name == "sum":
        return float(values.sum())
    if name == "last":
        return float(values[-1])
    if name == "max":
        return float(values.max())
    if name == "min":
        return float(values.min())
    k = max(1, math.ceil(0.1 * values.size))
    return float(np.sort(values)[:k].mean())


def span_values(
    token_values: np.ndarray, spans: Sequence[tuple[int, int]], is_action: Sequence[bool]
) -> list[np.ndarray]:
    """Per-message slices of a (T,) per-token array: the action tokens of each span, empty off actions.

    token_values[j] must be the logp of token j (from position j - 1's logits). Token 0 has none, so a
    span starting at 0 loses its first token, exactly as the official gather[max(s, 1) - 1 : e - 1].
    """
    out = []
    for (start, end), action in zip(spans, is_action):
        lo = max(start, 1)
        out.append(np.asarray(token_values[lo:end], dtype=np.float64) if action and end > lo else np.zeros(0))
    return out


def progress_scores(
    policy_logp: Sequence[np.ndarray],
    ref_logp: Sequence[np.ndarray] | None,
    is_action: Sequence[bool],
    token_agg: str,
    beta: float,
) -> list[float | None]:
    """Per-message step scores: beta * (agg(policy_logp) - agg(ref_logp)), None off actions (PAPER.md §3.3).

    Each model's span is aggregated first and the two results subtracted; for min, max and last that is
    not the aggregate of per-token differences. An empty (truncated) action span scores 0.0 and keeps its
    place. ref_logp None gives the one-model baseline beta * agg(policy_logp) ("No reference loaded").
    """
    _check(token_agg, TOKEN_AGGS, "token aggregation")
    scores: list[float | None] = []
    for i, action in enumerate(is_action):
        if not action:
            scores.append(None)
            continue
        ref = aggregate_tokens(ref_logp[i], token_agg) if ref_logp is not None else 0.0
        scores.append(beta * (aggregate_tokens(policy_logp[i], token_agg) - ref))
    return scores


def trajectory_score(step_scores: Sequence[float | None], step_agg: str) -> float | None:
    """aggregate_steps over the action messages; None when the trajectory has no action message.

    The official runners drop such a trajectory from UQ and rank it last in best-of-N; None lets
    evaluate_uq and evaluate_bon do the same.
    """
    _check(step_agg, STEP_AGGS, "step aggregation")
    steps = [s for s in step_scores if s is not None]
    return aggregate_steps(steps, step_agg) if steps else None


# --- failure-attribution predictors (PAPER.md §3.5); `scores` is the per-message vector A ---


def predict_failure(step_scores: Sequence[float | None], predictor: str) -> int:
    """The message index a predictor blames; step_scores holds None on non-action messages (not valid)."""
    _check(predictor, PREDICTORS, "failure-attribution predictor")
    scores = np.array([0.0 if s is None else s for s in step_scores], dtype=np.float64)  # (S,)
    valid = [s is not None for s in step_scores]
    if predictor == "min_cumulative":
        return min_cumulative(scores, valid)
    if predictor == "sharpest_drop":
        return sharpest_drop(scores, valid)
    return sharpest_abs_drop(scores, valid)


def min_cumulative(scores: np.ndarray, valid: Sequence[bool]) -> int:
    """argmin over valid i of cumsum(scores)_i (first on ties); no valid message -> 0."""
    cumulative = np.cumsum(scores)  # (S,) non-action messages add 0
    valid_idx = [i for i, ok in enumerate(valid) if ok]
    return min(valid_idx, key=lambda i: cumulative[i]) if valid_idx else 0


def sharpest_drop(scores: np.ndarray, valid: Sequence[bool]) -> int:
    """argmin over valid i of scores_i; the first valid message when none is negative; none valid -> 0."""
    valid_idx = [i for i, ok in enumerate(valid) if ok]
    if not valid_idx:
        return 0
    if all(scores[i] >= 0 for i in valid_idx):
        return valid_idx[0]
    return min(valid_idx, key=lambda i: scores[i])


def sharpest_abs_drop(scores: np.ndarray, valid: Sequence[bool]) -> int:
    """The valid message with the most negative change from the previous valid one.

    Falls back to the first valid message when there are fewer than two or no change is <= 0;
    none valid -> 0.
    """
    valid_idx = [i for i, ok in enumerate(valid) if ok]
    if len(valid_idx) < 2:
        return valid_idx[0] if valid_idx else 0
    changes = [scores[j] - scores[i] for i, j in zip(valid_idx, valid_idx[1:])]
    if min(changes) > 0:
        return valid_idx[0]
    return valid_idx[1 + int(np.argmin(changes))]


# --- evaluation of the three applications (PAPER.md §4) ---


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of `scores` predicting `labels` (True = success), ties counted half.

    Rank-based (Mann-Whitney U). Returns nan when labels hold only one class. Used for the live
    `score/` metric: trajectory progress advantage vs outcome (PAPER.md §8.4, "What to monitor").
    """
    scores = np.asarray(scores, dtype=np.float64)  # (B,)
    positive = np.asarray(labels).astype(bool)  # (B,)
    num_pos, num_neg = int(positive.sum()), int((~positive).sum())
    if num_pos == 0 or num_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # Tied scores share the mean of the 1-based ranks they span.
    mean_rank = np.cumsum(counts) - (counts - 1) / 2
    ranks = mean_rank[inverse]  # (B,)
    u = ranks[positive].sum() - num_pos * (num_pos + 1) / 2
    return float(u / (num_pos * num_neg))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson correlation of the average ranks (ties share a rank); nan if either is constant."""
    rx, ry = _average_ranks(x), _average_ranks(y)  # (B,)
    if rx.size < 2 or np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _average_ranks(values: Sequence[float]) -> np.ndarray:
    _, inverse, counts = np.unique(np.asarray(values, dtype=np.float64), return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2)[inverse]


def evaluate_uq(scores: Sequence[float | None], rewards: Sequence[float | None]) -> dict:
    """AUROC of the score predicting success, and Spearman rho of score vs reward (PAPER.md §4.2).

    A higher score predicts success; success is reward > 0.5: on binary rewards this is exactly the
    official runner's class, and it stays defined on [0, 1] rewards (where sklearn's call would fail).
    Trajectories without a reward or a score are left out.
    """
    kept = [(s, r) for s, r in zip(scores, rewards) if s is not None and r is not None]
    s = np.array([k[0] for k in kept], dtype=np.float64)  # (B,)
    r = np.array([k[1] for k in kept], dtype=np.float64)  # (B,)
    if np.unique(r).size < 2:  # the official runner reports nan for both when every reward is equal
        return {"auroc": float("nan"), "spearman": float("nan"), "n": len(kept)}
    return {"auroc": auroc(s, r > 0.5), "spearman": spearman(s, r), "n": len(kept)}


def best_of_n(task_ids: Sequence[str], scores: Sequence[float | None]) -> dict[str, int]:
    """Index of the highest-scoring trajectory of each task; ties -> lowest index; None or nan scores last."""
    best: dict[str, int] = {}
    keyed = [-math.inf if s is None or math.isnan(s) else s for s in scores]
    for i, task_id in enumerate(task_ids):
        if task_id not in best or keyed[i] > keyed[best[task_id]]:
            best[task_id] = i
    return best


def evaluate_bon(task_ids: Sequence[str], scores: Sequence[float | None], rewards: Sequence[float | None]) -> dict:
    """Best-of-N by score (PAPER.md §4.1): success is reward >= 1.0; a missing reward counts as 0.0.

    mean_at_n (random pick) is the mean over tasks of the mean reward of their trajectories and pass_at_n
    the share of tasks with any success, both as the official runner computes them.
    """
    rewards = [0.0 if r is None else float(r) for r in rewards]
    chosen = [rewards[i] for i in best_of_n(task_ids, scores).values()]
    by_task: dict[str, list[float]] = {}
    for task_id, reward in zip(task_ids, rewards):
        by_task.setdefault(task_id, []).append(reward)
    return {
        "num_tasks": len(by_task),
        "bon_success_rate": float(np.mean([r >= 1.0 for r in chosen])) if chosen else 0.0,
        "bon_mean_reward": float(np.mean(chosen)) if chosen else 0.0,
        "pass_at_n": float(np.mean([max(v) >= 1.0 for v in by_task.values()])) if by_task else 0.0,
        "mean_at_n": float(np.mean([np.mean(v) for v in by_task.values()])) if by_task else 0.0,
    }


def evaluate_fa(step_scores: Sequence[Sequence[float | None]], mistake_steps: Sequence[int | None]) -> dict:
    """Exact-match accuracy and mean absolute error (in messages) of each predictor vs mistake_step.

    Trajectories without a mistake_step are left out, as the official loader skips them.
    """
    kept = [(s, m) for s, m in zip(step_scores, mistake_steps) if m is not None]
    out = {}
    for predictor in PREDICTORS:
        errors = [abs(predict_failure(s, predictor) - int(m)) for s, m in kept]
        out[predictor] = {
            "accuracy": float(np.mean([e == 0 for e in errors])) if errors else 0.0,
            "mae": float(np.mean(errors)) if errors else 0.0,
            "n": len(errors),
        }
    return out
