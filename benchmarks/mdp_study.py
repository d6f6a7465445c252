"""Controlled study on the exact MDP (issue 10, step 1): which step signal, combined with GRPO, saves samples?

Tabular and pure torch, batched over seeds: every seed is its own random MDP (S states, A actions, horizon H)
with its own random reference pi_ref (a logits table over (step, state, action)), solved exactly for A* and pi*
(soft Bellman equations of learner/soft_value.py, batched here in torch; tests/benchmarks checks it against
soft_value.py). The policy is a logits table started at pi_ref and trained with Adam. Each update samples G
trajectories from each of the S start states (one group per start state). Objective: KL in the reward, as
benchmarks/theory_check.py: the outcome of trajectory i is R_i = sum_t r_t - beta * sum_t log pi_theta/pi_ref, so
pi* is the fixed point of outcome-only GRPO and J (the exact KL-regularised value, mean over start states) is the
measure. GRPO outcome advantage (R_i - group mean) / (group std + eps) ("std") or R_i - group mean ("nostd").
Every step t of trajectory i gets A_out[i] + coef * clip(signal[i, t] - group mean, -clip, clip), as
learner/advantage.py does, with signal, in two forms:
  raw:        the arm's estimate of A*(s_t, a_t)                                   (added to the outcome as it is)
  consistent: that estimate - beta * log pi_theta/pi_ref(a_t|s_t)        (zero at pi* for the oracle; KL-consistent)
Arms (the estimate of A*):
  grpo             none (outcome only)
  oracle           the exact A*: the upper bound of any step credit
  prm              online implicit PRM (learner/scorer.py): beta * log pi_phi/pi_ref, pi_phi a table trained by
                   BCE of sigmoid(beta * sum_t log pi_phi/pi_ref) against the outcome in [0, 1], Adam;
                   scores from before its update
  iterated         the free lunch iterated: beta * log pi_k/pi_ref, pi_k the policy frozen at the end of round k
                   (rounds of --round-updates updates; round 0 scores 0); the policy continues, all samples count
  related_reward   frozen exact pi* of a related task, the same MDP with 25% of its (s, a) rewards redrawn
  related_horizon  frozen exact pi* of the same MDP at horizon max(1, H // 2), aligned by steps to go
  gigpo            GiGPO-style anchor-state grouping: return-to-go (r_t + later soft rewards) minus its mean over
                   the steps of the same group that are at the same (t, s); 0 for a singleton anchor
  noisy90, noisy70 the exact A* plus a fixed Gaussian table of noise sized for rho ~ 0.9, 0.7 (signal-quality probe)
Metrics: trajectories to close 90% of J(pi*) - J(pi_ref) (first crossing), as a per-seed ratio to grpo-std of the
same cell, median with a bootstrap 95% interval over seeds; the Pearson rho of the arm's (uncentred) estimate with
A* over the steps sampled in each update, averaged over updates, and "rho of delta": that of its consistent delta
with the oracle's, A* - beta * log pi_theta/pi_ref (what the policy does not know yet); ms per update, all seeds.
Rewards: dense r(s, a) ~ U[0, 1] at every step (as envs/mdp.py; the PRM target is sum_t r_t / H); sparse: only
the last step pays, r(s, a) in {0, 1} (1 w.p. 1/3), a binary outcome.
Transitions: stochastic Dirichlet(0.5) rows as envs/mdp.py, or deterministic (one random next state per (s, a)).
Run: OMP_NUM_THREADS=1 nice -n 19 python benchmarks/mdp_study.py --seeds 24 --out benchmarks/results
"""

import argparse
import itertools
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

ARMS = ("grpo", "oracle", "prm", "iterated", "related_reward", "related_horizon", "gigpo", "noisy90", "noisy70")
NOISY = {"noisy90": 0.9, "noisy70": 0.7}


@dataclass(frozen=True)
class Cell:
    horizon: int
    reward: str  # dense | sparse
    transition: str  # stochastic | deterministic
    group_size: int


@dataclass(frozen=True)
class Config:
    num_states: int = 5
    num_actions: int = 3
    beta: float = 0.1
    lr: float = 0.05
    prm_lr: float = 0.05
    coef: float = 1.0
    clip: float = 2.0
    updates: int = 400
    round_updates: int = 50
    ref_scale: float = 0.5
    optimizer: str = "adam"


# --- the exact model -------------------------------------------------------------------------------------------
def make_mdps(cell: Cell, cfg: Config, seeds: int, seed: int) -> dict[str, torch.Tensor]:
    """seeds random MDPs: P (M, S, A, S), R and R_related (M, H, S, A), ref_logp (M, H, S, A); float64."""
    rng = np.random.default_rng([seed, cell.horizon, len(cell.reward), len(cell.transition)])
    m, s, a, h = seeds, cfg.num_states, cfg.num_actions, cell.horizon
    if cell.transition == "stochastic":
        p = rng.dirichlet(np.full(s, 0.5), size=(m, s, a))
    else:
        p = np.eye(s)[rng.integers(s, size=(m, s, a))]

    def draw() -> np.ndarray:
        r = np.zeros((m, h, s, a))
        if cell.reward == "dense":
            r[:] = rng.random((m, 1, s, a))
        else:
            last = (rng.random((m, s, a)) < 1 / 3).astype(float)
            last.reshape(m, -1)[last.reshape(m, -1).sum(1) == 0, 0] = 1.0  # every MDP can succeed
            r[:, -1] = last
        return r

    r, fresh = draw(), draw()
    related = np.where(rng.random((m, 1, s, a)) < 0.25, fresh, r)
    ref = torch.log_softmax(torch.from_numpy(cfg.ref_scale * rng.standard_normal((m, h, s, a))), -1)
    as_t = torch.from_numpy
    return {"P": as_t(p), "R": as_t(r), "R_related": as_t(related), "ref_logp": ref}


def soft_solve(p, r, ref_logp, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched soft value iteration (learner/soft_value.py with per-step rewards): (A* (M, H, S, A), V* (M, H, S))."""
    m, h, s, _ = r.shape
    q, v = torch.zeros_like(r), torch.zeros(m, h, s, dtype=r.dtype)
    next_v = torch.zeros(m, s, dtype=r.dtype)
    for t in reversed(range(h)):
        q[:, t] = r[:, t] + torch.einsum("msan,mn->msa", p, next_v)
        v[:, t] = beta * torch.logsumexp(ref_logp[:, t] + q[:, t] / beta, -1)
        next_v = v[:, t]
    return q - v[..., None], v


def policy_value(p, r, ref_logp, logp, beta: float) -> torch.Tensor:
    """Exact J(pi) of the KL-regularised objective, mean over start states, (M,)."""
    probs, value = logp.exp(), torch.zeros(r.shape[0], r.shape[2], dtype=r.dtype)
    for t in reversed(range(r.shape[1])):
        q = r[:, t] - beta * (logp[:, t] - ref_logp[:, t]) + torch.einsum("msan,mn->msa", p, value)
        value = (probs[:, t] * q).sum(-1)
    return value.mean(-1)


def related_horizon_advantage(mdp, beta: float) -> torch.Tensor:
    """A* of the same MDP at horizon H' = max(1, H // 2), on the target's steps by steps to go (H, ...)."""
    h = mdp["R"].shape[1]
    short = max(1, h // 2)
    # The last H' steps: dense rewards are the same at every step, sparse ones stay on the last step.
    adv, _ = soft_solve(mdp["P"], mdp["R"][:, h - short :], mdp["ref_logp"][:, h - short :], beta)
    index = torch.clamp(torch.arange(h) - (h - short), min=0)  # step t of H -> step of H' with as many to go
    return adv[:, index]


# --- sampling and advantages -----------------------------------------------------------------------------------
def categorical(probs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One index per row of probs (..., K), by inverse CDF."""
    u = torch.rand(probs.shape[:-1] + (1,), generator=gen, dtype=probs.dtype)
    return torch.clamp((u > probs.cumsum(-1)).sum(-1), max=probs.shape[-1] - 1)


def sample(p, logp, group_size: int, gen) -> tuple[torch.Tensor, torch.Tensor]:
    """G trajectories from every start state: states, actions (M, S*G, H); groups are consecutive blocks of G."""
    m, h, s, _ = logp.shape
    state = torch.arange(s).repeat_interleave(group_size).expand(m, -1)  # (M, B)
    rows = torch.arange(m)[:, None]
    states, actions = [], []
    for t in range(h):
        action = categorical(logp[rows, t, state].exp(), gen)
        states.append(state)
        actions.append(action)
        state = categorical(p[rows, state, action], gen)
    return torch.stack(states, -1), torch.stack(actions, -1)


def at(table: torch.Tensor, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """table (M, H, S, A) read at the sampled (t, s_t, a_t): (M, B, H)."""
    m, b, h = states.shape
    return table[torch.arange(m)[:, None, None], torch.arange(h).expand(m, b, h), states, actions]


def group_view(x: torch.Tensor, group_size: int) -> torch.Tensor:
    return x.reshape(x.shape[0], -1, group_size, *x.shape[2:])


def outcome_advantage(outcome: torch.Tensor, group_size: int, use_std: bool, eps: float = 1e-6) -> torch.Tensor:
    """GRPO: (R - group mean) / (population group std + eps), or without the std; (M, B) -> (M, B)."""
    g = group_view(outcome, group_size)
    adv = g - g.mean(-1, keepdim=True)
    if use_std:
        adv = adv / (g.std(-1, unbiased=False, keepdim=True) + eps)
    return adv.reshape(outcome.shape)


def centre_clip(signal: torch.Tensor, group_size: int, clip: float) -> torch.Tensor:
    """signal (M, B, H) minus its mean over all steps of the group, clipped (learner/advantage.py)."""
    g = group_view(signal, group_size)
    return torch.clamp(g - g.mean((-2, -1), keepdim=True), -clip, clip).reshape(signal.shape)


def anchor_advantage(to_go: torch.Tensor, states: torch.Tensor, group_size: int, num_states: int) -> torch.Tensor:
    """GiGPO step advantage: to_go (M, B, H) minus its mean over the group's steps at the same (t, s); 0 alone."""
    onehot = torch.nn.functional.one_hot(group_view(states, group_size), num_states).to(to_go.dtype)  # M,g,G,H,S
    total = (onehot * group_view(to_go, group_size)[..., None]).sum(2, keepdim=True)
    count = onehot.sum(2, keepdim=True)
    mean = ((total / count.clamp(min=1)) * onehot).sum(-1)
    alone = (count * onehot).sum(-1) <= 1
    return torch.where(alone, 0.0, group_view(to_go, group_size) - mean).reshape(to_go.shape)


def samples_to_fraction(fraction: np.ndarray, batch: int, level: float = 0.9) -> float:
    """Trajectories until the gap-closed curve (U+1,) (entry u: after u updates) first reaches level; inf if never."""
    hit = np.flatnonzero(np.asarray(fraction) >= level)
    return float(hit[0] * batch) if len(hit) else float("inf")


def pearson_rows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row of x and y (M, N); nan where either row is constant."""
    x, y = x - x.mean(-1, keepdim=True), y - y.mean(-1, keepdim=True)
    den = (x.square().sum(-1) * y.square().sum(-1)).sqrt()
    return torch.where(den > 1e-12, (x * y).sum(-1) / den.clamp(min=1e-300), torch.nan)


def consistent_delta(signal: torch.Tensor, logratio: torch.Tensor, beta: float) -> torch.Tensor:
    """KL-consistent step signal: estimate of A* - beta * log pi_theta/pi_ref; exactly 0 at pi* for the oracle."""
    return signal - beta * logratio


# --- one arm on all seeds of a cell ----------------------------------------------------------------------------
def run_arm(cell: Cell, cfg: Config, mdp, arm: str, form: str, use_std: bool, seed: int) -> dict:
    """Train the arm on every MDP of the cell; returns the gap-closed curves, rho per update and ms per update."""
    p, r, ref = mdp["P"], mdp["R"], mdp["ref_logp"]
    adv_star, v_star = soft_solve(p, r, ref, cfg.beta)
    j_star, j_ref = v_star[:, 0].mean(-1), policy_value(p, r, ref, ref, cfg.beta)
    gen = torch.Generator().manual_seed(seed)
    theta = ref.clone().requires_grad_(True)
    params = [theta]
    fixed = None
    if arm == "oracle":
        fixed = adv_star
    elif arm in NOISY:  # noise sized on A*'s spread under uniform visits, for rho ~ NOISY[arm]
        sd = adv_star.flatten(1).std(-1)[:, None, None, None]
        noise = torch.randn(adv_star.shape, generator=gen, dtype=adv_star.dtype)
        fixed = adv_star + sd * np.sqrt(1 / NOISY[arm] ** 2 - 1) * noise
    elif arm == "related_reward":
        fixed = soft_solve(p, mdp["R_related"], ref, cfg.beta)[0]
    elif arm == "related_horizon":
        fixed = related_horizon_advantage(mdp, cfg.beta)
    scorer = ref.clone()  # iterated: pi_k of the last finished round (round 0: pi_ref, a signal of 0)
    phi = ref.clone().requires_grad_(True)
    prm_opt = torch.optim.Adam([phi], lr=cfg.prm_lr)
    opt = torch.optim.Adam(params, lr=cfg.lr) if cfg.optimizer == "adam" else torch.optim.SGD(params, lr=cfg.lr)
    fraction, rho, residual, seconds = [], [], [], 0.0
    for update in range(cfg.updates + 1):
        logp = torch.log_softmax(theta, -1)
        with torch.no_grad():
            j = policy_value(p, r, ref, logp, cfg.beta)
            fraction.append(((j - j_ref) / (j_star - j_ref)).numpy())
        if update == cfg.updates:
            break
        started = time.perf_counter()
        # --- algorithm ---
        with torch.no_grad():
            states, actions = sample(p, logp.detach(), cell.group_size, gen)
            rewards = at(r, states, actions)  # (M, B, H)
            logratio = at(logp.detach() - ref, states, actions)
            outcome = (rewards - cfg.beta * logratio).sum(-1)  # KL in the reward
            signal = None
            if fixed is not None:
                signal = at(fixed, states, actions)
            elif arm == "prm":
                signal = cfg.beta * at(torch.log_softmax(phi, -1) - ref, states, actions)
            elif arm == "iterated":
                if update > 0 and update % cfg.round_updates == 0:
                    scorer = logp.detach().clone()
                signal = cfg.beta * at(scorer - ref, states, actions)
            elif arm == "gigpo":
                soft = rewards - cfg.beta * logratio
                later = soft.flip(-1).cumsum(-1).flip(-1) - soft  # soft rewards after step t
                signal = anchor_advantage(rewards + later, states, cell.group_size, cfg.num_states)
            adv = outcome_advantage(outcome, cell.group_size, use_std)[..., None].expand_as(rewards)
            if signal is not None:
                step = consistent_delta(signal, logratio, cfg.beta) if form == "consistent" else signal
                adv = adv + cfg.coef * centre_clip(step, cell.group_size, cfg.clip)
        loss = -(adv * at(logp, states, actions)).sum() / (states.shape[1] * states.shape[2])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if arm == "prm":  # BCE of sigmoid(beta * sum_t log pi_phi/pi_ref) against the outcome in [0, 1]
            logit = cfg.beta * at(torch.log_softmax(phi, -1) - ref, states, actions).sum(-1)
            target = (rewards.sum(-1) / (1 if cell.reward == "sparse" else r.shape[1])).clamp(0, 1)
            prm_loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, target, reduction="sum")
            prm_opt.zero_grad()
            (prm_loss / states.shape[1]).backward()
            prm_opt.step()
        seconds += time.perf_counter() - started
        # --- plumbing ---
        if signal is not None:  # rho of the estimate with A*, and of its consistent delta with the oracle's
            target = at(adv_star, states, actions)
            rho.append(pearson_rows(signal.flatten(1), target.flatten(1)).numpy())
            residual.append(
                pearson_rows(*(consistent_delta(x, logratio, cfg.beta).flatten(1) for x in (signal, target)))
            )
    batch = cfg.num_states * cell.group_size
    curves = np.stack(fraction, 1)  # (M, U+1)
    return {
        "samples": [samples_to_fraction(c, batch) for c in curves],
        "final_fraction": curves[:, -1].tolist(),
        "rho": np.nanmean(np.stack(rho, 1), 1).tolist() if rho else [float("nan")] * len(curves),
        "rho_residual": torch.stack(residual, 1).nanmean(1).tolist() if rho else [float("nan")] * len(curves),
        "ms_per_update": 1000 * seconds / cfg.updates,
        "mean_curve": curves.mean(0)[:: max(1, cfg.updates // 100)].tolist(),
    }


# --- the grid and its report -----------------------------------------------------------------------------------
def bootstrap_median(values: np.ndarray, rng: np.random.Generator, draws: int = 2000) -> tuple[float, float, float]:
    """Median of values (inf allowed, nan dropped) and its bootstrap 95% interval over the values."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    medians = np.median(values[rng.integers(len(values), size=(draws, len(values)))], 1)
    return float(np.median(values)), float(np.quantile(medians, 0.025)), float(np.quantile(medians, 0.975))


def ratios(samples: list[float], reference: list[float]) -> np.ndarray:
    """Per-seed samples / reference samples; nan where the reference never got there (the pair says nothing)."""
    s, ref = np.asarray(samples, float), np.asarray(reference, float)
    out = np.where(np.isfinite(ref), s / np.where(ref > 0, ref, np.nan), np.nan)
    return out


def variants(arms: list[str], forms: list[str], baselines: list[str]):
    for arm in arms:
        for form in ["-"] if arm == "grpo" else forms:
            for baseline in baselines:
                yield arm, form, baseline


def run_grid(args, cfg: Config) -> list[dict]:
    results = []
    cells = [
        Cell(h, rw, tr, g)
        for h, rw, tr, g in itertools.product(args.horizons, args.rewards, args.transitions, args.group_sizes)
    ]
    for cell in cells:
        mdp = make_mdps(cell, cfg, args.seeds, args.seed)
        for arm, form, baseline in variants(args.arms, args.forms, args.baselines):
            started = time.perf_counter()
            out = run_arm(cell, cfg, mdp, arm, form, baseline == "std", args.seed + 1)
            results.append({"cell": asdict(cell), "arm": arm, "form": form, "baseline": baseline, **out})
            print(
                f"{cell} {arm:16s} {form:10s} {baseline:5s} median samples {np.median(out['samples']):7.0f} "
                f"final {np.median(out['final_fraction']):.3f} rho {np.nanmedian(out['rho']):.3f} "
                f"{out['ms_per_update']:.2f} ms/update, {time.perf_counter() - started:.1f} s",
                flush=True,
            )
    return results


def summarise(results: list[dict], seed: int) -> list[dict]:
    """Per result: median ratio to grpo-std of its cell (bootstrap CI), to the oracle of its form/baseline, rho."""
    rng = np.random.default_rng(seed)
    index = {(json.dumps(r["cell"]), r["arm"], r["form"], r["baseline"]): r for r in results}
    rows = []
    for r in results:
        key = json.dumps(r["cell"])
        grpo = index.get((key, "grpo", "-", "std"))
        oracle = index.get((key, "oracle", r["form"], r["baseline"]))
        ratio = bootstrap_median(ratios(r["samples"], grpo["samples"]), rng) if grpo else (np.nan,) * 3
        vs_oracle = bootstrap_median(ratios(r["samples"], oracle["samples"]), rng) if oracle else (np.nan,) * 3
        rows.append({
            "cell": r["cell"], "arm": r["arm"], "form": r["form"], "baseline": r["baseline"],
            "ratio": ratio, "ratio_to_oracle": vs_oracle, "rho": float(np.nanmedian(r["rho"])),
            "rho_residual": float(np.nanmedian(r.get("rho_residual", [np.nan]))),
            "reached": float(np.mean(np.isfinite(r["samples"]))), "final": float(np.median(r["final_fraction"])),
            "ms": r["ms_per_update"],
        })  # fmt: skip
    return rows


def markdown(rows: list[dict], header: str) -> str:
    fmt = lambda x: "–" if not np.isfinite(x) else f"{x:.2f}"  # noqa: E731
    lines = [header, "", "| H | reward | transition | G | arm | form | baseline | ratio to grpo-std [95% CI] | "
             "ratio to oracle | rho | rho of delta | reached | final | ms/update |", "|" + "---|" * 14]  # fmt: skip
    for r in rows:
        c, (m, lo, hi), o = r["cell"], r["ratio"], r["ratio_to_oracle"][0]
        lines.append(
            f"| {c['horizon']} | {c['reward']} | {c['transition']} | {c['group_size']} | {r['arm']} | {r['form']} | "
            f"{r['baseline']} | {fmt(m)} [{fmt(lo)}, {fmt(hi)}] | {fmt(o)} | {fmt(r['rho'])} | "
            f"{fmt(r['rho_residual'])} | {r['reached']:.2f} | "
            f"{r['final']:.3f} | {r['ms']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for form, marker in (("raw", "x"), ("consistent", "o")):
        pts = [(r["rho_residual"], r["ratio"][0]) for r in rows if r["form"] == form and np.isfinite(r["rho_residual"])]
        if pts:
            x, y = zip(*pts)
            left.scatter(x, np.minimum(y, 4), marker=marker, alpha=0.6, label=form)
    left.axhline(1, color="grey", lw=0.8)
    left.set(
        xlabel="rho of the arm's delta with A* - beta log pi_theta/pi_ref (the oracle's delta)",
        ylabel="median samples to 90% / grpo-std (cap 4)",
        yscale="log",
        title="every cell, arm, form, baseline",
    )
    left.legend()
    cells = [json.loads(c) for c in sorted({json.dumps(r["cell"]) for r in results})]
    last = max(cells, key=lambda c: (c["horizon"], c["reward"] == "sparse", c["transition"] == "stochastic"))
    for r in results:
        if r["cell"] == last and r["baseline"] == "std" and r["form"] in ("-", "consistent"):
            right.plot(np.linspace(0, 1, len(r["mean_curve"])), r["mean_curve"], label=r["arm"])
    right.axhline(0.9, color="grey", lw=0.8)
    right.set(
        xlabel="fraction of the run",
        ylabel="mean fraction of J(pi*) - J(pi_ref) closed",
        ylim=(0.5, 1.0),
        title="H={horizon} {reward} {transition} G={group_size}; consistent, std".format(**last),
    )
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parse_args() -> argparse.Namespace:
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    strs = lambda s: s.split(",")  # noqa: E731
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--horizons", type=ints, default=[3, 6, 12])
    parser.add_argument("--rewards", type=strs, default=["dense", "sparse"])
    parser.add_argument("--transitions", type=strs, default=["stochastic", "deterministic"])
    parser.add_argument("--group-sizes", type=ints, default=[4, 16])
    parser.add_argument("--arms", type=strs, default=list(ARMS))
    parser.add_argument("--forms", type=strs, default=["raw", "consistent"])
    parser.add_argument("--baselines", type=strs, default=["std", "nostd"])
    parser.add_argument("--seeds", type=int, default=24, help="random MDPs per cell, batched")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--updates", type=int, default=Config.updates)
    parser.add_argument("--lr", type=float, default=Config.lr)
    parser.add_argument("--beta", type=float, default=Config.beta)
    parser.add_argument("--coef", type=float, default=Config.coef)
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    parser.add_argument("--name", default="mdp_study", help="file stem of the outputs")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    return parser.parse_args()


def main() -> None:
    torch.set_num_threads(1)
    args = parse_args()
    cfg = Config(updates=args.updates, lr=args.lr, beta=args.beta, coef=args.coef, optimizer=args.optimizer)
    started = time.perf_counter()
    results = run_grid(args, cfg)
    rows = summarise(results, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / args.name
    meta = {"config": asdict(cfg), "seeds": args.seeds, "seconds": time.perf_counter() - started}
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results, "rows": rows}))
    stem.with_name(stem.name + "_table.md").write_text(markdown(rows, f"config {asdict(cfg)}, {args.seeds} seeds"))
    plot(rows, results, stem.with_suffix(".png"))
    print(f"wrote {stem}.json/.png and {stem}_table.md in {meta['seconds']:.0f} s")


if __name__ == "__main__":
    main()
