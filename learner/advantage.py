"""Advantages per step: the GRPO outcome advantage plus the group-centred progress advantage.

Data flow: scorer (step_logratio) -> [advantage] -> step_advantage -> loss.
Pure numpy; the math follows PAPER.md §2.4 and §8.4 ("Combining with GRPO").
"""

from collections.abc import Sequence

import numpy as np

from learner.aggregate import min_cumulative


def outcome_advantage(outcome: np.ndarray, group_ids: Sequence[str], eps: float = 1e-6) -> np.ndarray:
    """GRPO outcome advantage, PAPER.md §8.4: (R - group mean) / (group std + eps), (B,).

    The std is the population std of the group. A group whose outcomes are all equal gets exactly 0.
    """
    outcome = np.asarray(outcome, dtype=np.float64)  # (B,)
    outcome_adv = np.zeros_like(outcome)  # (B,)
    for members in _groups(group_ids).values():
        values = outcome[members]
        # Tested for equality rather than std == 0: the float mean of equal values can be off by
        # one ulp, which would turn "no signal" into a tiny advantage.
        if np.ptp(values) > 0:
            outcome_adv[members] = (values - values.mean()) / (values.std() + eps)
    return outcome_adv


def progress_advantage(step_logratio: list[np.ndarray], beta: float) -> list[np.ndarray]:
    """Progress advantage per step, PAPER.md §2.4: beta * step_logratio, one (S,) array per trajectory.

    step_logratio is already the token sum of (scorer_logp - ref_logp) over the step's action
    tokens; §2.4 shows that sum, not the mean, is the exact step advantage.
    """
    return [beta * np.asarray(steps, dtype=np.float64) for steps in step_logratio]


def step_sums(token_values: np.ndarray, step_index: np.ndarray, num_steps: int) -> np.ndarray:
    """Sum of token values per step, (T,) -> (S,), with S = num_steps.

    step_index is -1 on tokens outside any action and they are ignored. A step with no action
    tokens (empty or truncated away) sums to 0.0 and keeps its place (PAPER.md §9.5).
    """
    token_values = np.asarray(token_values, dtype=np.float64)  # (T,)
    step_index = np.asarray(step_index)  # (T,)
    action = step_index >= 0
    sums = np.zeros(num_steps, dtype=np.float64)  # (S,)
    np.add.at(sums, step_index[action], token_values[action])
    return sums


def step_advantage(
    outcome_adv: np.ndarray,
    progress_adv: list[np.ndarray],
    group_ids: Sequence[str],
    *,
    coef: float,
    clip: float,
    failure_gating: bool = False,
) -> list[np.ndarray]:
    """Advantage of every step, PAPER.md §8.4: A_out[i] + coef * clip(progress_adv[i, t] - group mean).

    With failure_gating (PAPER.md §8.4 variant a), a trajectory with A_out[i] < 0 gets its outcome term
    only from t_hat = argmin_t cumsum(progress_adv[i])[t] (the predicted failure step, §3.5) on, so
    the steps before the mistake are not blamed for it.

    progress_adv is centred by its mean over all steps of all trajectories of the group, because its
    mean under the policy is beta * KL > 0, not 0. It is deliberately not divided by the group's std
    (PAPER.md's sketch does): a scorer that has learned nothing yet gives near-equal values whose
    tiny spread would be blown up to unit-size advantages; beta sets the scale instead (the implicit
    PRM's beta * sum of logratios is a success logit). Returns one (S,) array per trajectory; with
    coef = 0 every step equals outcome_adv of its trajectory.
    """
    outcome_adv = np.asarray(outcome_adv, dtype=np.float64)  # (B,)
    if not len(outcome_adv) == len(progress_adv) == len(group_ids):
        raise ValueError(
            f"outcome_adv ({len(outcome_adv)}), progress_adv ({len(progress_adv)}) and group_ids "
            f"({len(group_ids)}) must have one entry per trajectory"
        )
    progress_adv = [np.asarray(steps, dtype=np.float64) for steps in progress_adv]
    centred = [np.zeros_like(steps) for steps in progress_adv]
    for members in _groups(group_ids).values():
        values = np.concatenate([progress_adv[i] for i in members])  # (N,) all steps of the group
        if values.size == 0 or np.ptp(values) == 0:
            continue  # exactly 0, not a rounding residue
        for i in members:
            centred[i] = progress_adv[i] - values.mean()
    advantage = []
    for i, steps in enumerate(progress_adv):
        outcome_term = np.full(len(steps), outcome_adv[i])  # (S,)
        if failure_gating and outcome_adv[i] < 0 and len(steps):
            outcome_term[: min_cumulative(steps, [True] * len(steps))] = 0.0
        advantage.append(outcome_term + coef * np.clip(centred[i], -clip, clip))
    return advantage


def _groups(group_ids: Sequence[str]) -> dict[str, list[int]]:
    """Indices of each group, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, group_id in enumerate(group_ids):
        groups.setdefault(group_id, []).append(i)
    return groups
