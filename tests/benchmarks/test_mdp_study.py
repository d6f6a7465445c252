"""The tabular MDP study (benchmarks/mdp_study.py): its batched solver, its signals and its sample count."""

import numpy as np
import torch

from benchmarks.mdp_study import (
    Cell,
    Config,
    anchor_advantage,
    consistent_delta,
    make_mdps,
    outcome_advantage,
    pearson_rows,
    policy_value,
    run_arm,
    samples_to_fraction,
    soft_solve,
)
from learner.soft_value import optimal_advantage, soft_policy_value, soft_value_iteration

CFG = Config(updates=30)


def test_batched_solver_matches_soft_value_and_pi_star_is_best():
    cell = Cell(horizon=4, reward="dense", transition="stochastic", group_size=4)
    mdp = make_mdps(cell, CFG, seeds=3, seed=0)
    adv, v = soft_solve(mdp["P"], mdp["R"], mdp["ref_logp"], CFG.beta)
    for m in range(3):
        ref = mdp["ref_logp"][m].exp().numpy()
        q, v_np, pi_star = soft_value_iteration(mdp["P"][m].numpy(), mdp["R"][m, 0].numpy(), ref, CFG.beta, 4)
        np.testing.assert_allclose(adv[m].numpy(), optimal_advantage(q, v_np), atol=1e-10)
        j_np = soft_policy_value(mdp["P"][m].numpy(), mdp["R"][m, 0].numpy(), ref, pi_star, CFG.beta, 4)[0].mean()
        assert abs(float(v[m, 0].mean()) - j_np) < 1e-10
    star_logp = mdp["ref_logp"] + adv / CFG.beta  # beta log pi*/pi_ref = A*
    j_star = policy_value(mdp["P"], mdp["R"], mdp["ref_logp"], star_logp, CFG.beta)
    torch.testing.assert_close(j_star, v[:, 0].mean(-1))
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        noise = torch.randn(star_logp.shape, generator=gen, dtype=torch.float64)
        other = torch.log_softmax(star_logp + 0.3 * noise, -1)
        assert (policy_value(mdp["P"], mdp["R"], mdp["ref_logp"], other, CFG.beta) < j_star).all()


def test_sparse_solver_pays_only_at_the_end():
    cell = Cell(horizon=3, reward="sparse", transition="deterministic", group_size=4)
    mdp = make_mdps(cell, CFG, seeds=4, seed=1)
    assert (mdp["R"][:, :-1] == 0).all() and set(mdp["R"].unique().tolist()) <= {0.0, 1.0}
    assert (mdp["P"].sum(-1) == 1).all() and ((mdp["P"] == 0) | (mdp["P"] == 1)).all()
    adv, v = soft_solve(mdp["P"], mdp["R"], mdp["ref_logp"], CFG.beta)
    # E_{a ~ pi_ref} exp(A*/beta) = 1 at every (t, s) (pi* = pi_ref * exp(A*/beta) is a distribution).
    torch.testing.assert_close((mdp["ref_logp"] + adv / CFG.beta).exp().sum(-1), torch.ones_like(v))


def test_consistent_delta_is_zero_at_pi_star_and_not_elsewhere():
    mdp = make_mdps(Cell(6, "dense", "stochastic", 4), CFG, seeds=2, seed=2)
    adv, _ = soft_solve(mdp["P"], mdp["R"], mdp["ref_logp"], CFG.beta)
    star_logratio = torch.log_softmax(mdp["ref_logp"] + adv / CFG.beta, -1) - mdp["ref_logp"]
    assert consistent_delta(adv, star_logratio, CFG.beta).abs().max() < 1e-10
    assert consistent_delta(adv, torch.zeros_like(adv), CFG.beta).abs().max() > 0.1  # at pi_ref it is A*


def test_oracle_signal_has_rho_one_and_the_run_improves_j():
    cell = Cell(horizon=3, reward="dense", transition="stochastic", group_size=4)
    mdp = make_mdps(cell, CFG, seeds=4, seed=3)
    out = run_arm(cell, CFG, mdp, "oracle", "consistent", True, seed=0)
    np.testing.assert_allclose(out["rho"], 1.0, atol=1e-9)
    np.testing.assert_allclose(out["rho_residual"], 1.0, atol=1e-9)  # its delta is the oracle's delta
    assert np.median(out["final_fraction"]) > 0.3  # 30 Adam updates close a good part of the gap
    grpo = run_arm(cell, CFG, mdp, "grpo", "-", True, seed=0)
    assert np.isnan(grpo["rho"]).all()  # no step signal, no correlation


def test_samples_to_fraction_on_a_synthetic_curve():
    curve = np.array([0.0, 0.5, 0.89, 0.95, 0.7, 0.99])
    assert samples_to_fraction(curve, batch=20) == 60.0  # first crossing: after 3 updates of 20 trajectories
    assert samples_to_fraction(curve, batch=20, level=0.99) == 100.0
    assert samples_to_fraction(curve[:3], batch=20) == float("inf")


def test_outcome_advantage_with_and_without_std():
    outcome = torch.tensor([[1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0]], dtype=torch.float64)
    with_std = outcome_advantage(outcome, 4, True)
    torch.testing.assert_close(with_std[0, :4], torch.tensor([3.0, -1.0, -1.0, -1.0]).double() / 3**0.5, atol=1e-5,
                               rtol=0)  # fmt: skip
    assert (with_std[0, 4:] == 0).all()  # equal outcomes: exactly 0
    torch.testing.assert_close(outcome_advantage(outcome, 4, False)[0, :4], torch.tensor([0.75, -0.25, -0.25, -0.25],
                               dtype=torch.float64))  # fmt: skip


def test_anchor_advantage_groups_by_step_and_state_within_a_group():
    # One group of 3 trajectories, horizon 2; step 0 all in state 0, step 1 in states 1, 1, 2.
    states = torch.tensor([[[0, 1], [0, 1], [0, 2]]])
    to_go = torch.tensor([[[3.0, 1.0], [1.0, 2.0], [2.0, 5.0]]], dtype=torch.float64)
    adv = anchor_advantage(to_go, states, group_size=3, num_states=3)
    torch.testing.assert_close(adv, torch.tensor([[[1.0, -0.5], [-1.0, 0.5], [0.0, 0.0]]], dtype=torch.float64))


def test_pearson_rows():
    x = torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    rho = pearson_rows(x, torch.tensor([[2.0, 4.0, 7.0], [1.0, 2.0, 3.0]], dtype=torch.float64))
    assert abs(float(rho[0]) - np.corrcoef([1, 2, 3], [2, 4, 7])[0, 1]) < 1e-12 and torch.isnan(rho[1])
