"""Theory check (PAPER.md §2.2, §2.6.1): after KL-regularised RL, does beta * log pi_theta/pi_ref match the exact A*?

The tiny random model is pi_ref on the text MDP (envs/mdp.py): pi_ref(a|s, t) is its next-token distribution
over the action words after the rendered state, renormalised over those words. learner/soft_value.py solves
for A* exactly; a copy of the model is then trained (plain torch AdamW on CPU) on the same objective, KL in
the reward with the same beta, and every iteration reports the Pearson and Spearman correlation of
beta * log pi_theta/pi_ref with A* over the (step, state, action) triples visited by that iteration's batch,
and, as a control, its Pearson correlation with the reward r(s, a), which it need not recover (PAPER.md §2.3).
Shapes are the MDP's: H steps of the horizon, S states, A actions (here S counts states, not steps).
Run: python benchmarks/theory_check.py                              (sampled REINFORCE, the default)
     python benchmarks/theory_check.py --gradient exact            (exact expected policy gradient)
"""

import argparse
import copy
import time

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from actors.render import Conversation
from cluster.models import resolve_model
from envs import make_env
from learner.soft_value import optimal_advantage, soft_policy_value, soft_value_iteration


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=600, help="iterations (one update each)")
    parser.add_argument("--batch-size", type=int, default=512, help="trajectories sampled per iteration")
    parser.add_argument(
        "--gradient",
        choices=["sampled", "exact"],
        default="sampled",
        help="sampled: REINFORCE on the batch; exact: gradient of the exact objective J(pi_theta)",
    )
    parser.add_argument("--beta", type=float, default=0.5, help="KL coefficient, the same in training and in A*")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate, decayed linearly to 0")
    parser.add_argument("--num-states", type=int, default=5)
    parser.add_argument("--num-actions", type=int, default=3)
    parser.add_argument("--horizon", type=int, default=3)
    parser.add_argument(
        "--mdp-seed", type=int, default=3, help="the model; 3: of seeds 0-3 the one whose r is the worst proxy of A*"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--print-every", type=int, default=25, help="table row every this many iterations")
    return parser.parse_args()


def action_token_ids(tokenizer, words: tuple[str, ...]) -> list[int]:
    """The single token of each action word; stops loudly if a word is not one token that decodes back to itself."""
    ids = []
    for word in words:
        tokens = tokenizer.encode(word, add_special_tokens=False)
        if len(tokens) != 1 or tokenizer.decode(tokens) != word:
            raise SystemExit(f"action word {word!r} is not a single token of this tokenizer ({tokens}); pick others")
        ids.append(tokens[0])
    if len(set(ids)) != len(ids):
        raise SystemExit(f"action words {words} share tokens {ids}")
    return ids


def state_prompts(env, tokenizer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompt ids of every (t, s) as the agent loop renders a first observation: (H*S, T) ids, mask, last index."""
    # The policy sees only the current state's text, so pi(a|.) is a function of (t, s), the MDP's own state.
    rows = [
        Conversation(tokenizer, env.observation(s, t)).prompt_ids()
        for t in range(env.horizon)
        for s in range(env.num_states)
    ]
    seq_len = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), seq_len), tokenizer.pad_token_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros_like(input_ids)  # (B, T)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)], attention_mask[i, : len(r)] = torch.tensor(r), 1
    return input_ids, attention_mask, attention_mask.sum(1) - 1


def action_logp(model, prompts, action_ids: list[int], shape: tuple[int, int, int]) -> torch.Tensor:
    """log pi(a|s, t) with the next-token logits masked to the action tokens, float32 (H, S, A)."""
    input_ids, attention_mask, last = prompts
    hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    hidden = hidden[torch.arange(len(last)), last]  # (H*S, hidden_size): the position that predicts the action
    logits = model.get_output_embeddings()(hidden)[:, action_ids].float()  # only the action words compete
    return torch.log_softmax(logits, -1).reshape(shape)


def sample_batch(env, probs: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[list[tuple]]:
    """batch_size trajectories played in env with pi_theta; each a list of (t, s, a, reward)."""
    tasks = env.tasks("train")
    batch = []
    for i in range(batch_size):
        env.reset(tasks[i % len(tasks)])
        steps, done = [], False
        while not done:
            t, s = env.t, env.state
            a = int(rng.choice(len(env.action_words), p=probs[t, s]))
            result = env.step(env.action_words[a])
            steps.append((t, s, a, result.reward))
            done = result.done
        batch.append(steps)
    return batch


def reinforce_weights(batch, logratio: np.ndarray, beta: float, shape) -> np.ndarray:
    """Sum over the batch of (G_t - baseline) per (t, s, a), / batch size: the REINFORCE weight of log pi(a|s, t).

    G_t is the return-to-go of r - beta * log pi_theta/pi_ref (KL in the reward, PAPER.md §2.1); the
    baseline is the leave-one-out mean of G_t over the batch's visits of the same (t, s), so it stays unbiased.
    """
    visits = []  # (t, s, a, G_t)
    for steps in batch:
        to_go = 0.0
        for t, s, a, reward in reversed(steps):
            to_go += reward - beta * logratio[t, s, a]
            visits.append((t, s, a, to_go))
    totals, counts = np.zeros(shape[:2]), np.zeros(shape[:2])
    for t, s, _, g in visits:
        totals[t, s] += g
        counts[t, s] += 1
    weights = np.zeros(shape)
    for t, s, a, g in visits:
        n = counts[t, s]
        baseline = (totals[t, s] - g) / (n - 1) if n > 1 else g
        weights[t, s, a] += (g - baseline) / len(batch)
    return weights


def exact_objective(policy_logp, ref_logp, transitions, rewards, beta: float) -> torch.Tensor:
    """J(pi_theta) of PAPER.md §2.1 by backward induction, differentiable; start states uniform (as the tasks)."""
    probs = policy_logp.exp()  # (H, S, A)
    value = torch.zeros(rewards.shape[0], dtype=probs.dtype)
    for t in reversed(range(policy_logp.shape[0])):
        q = rewards - beta * (policy_logp[t] - ref_logp[t]) + transitions @ value  # (S, A)
        value = (probs[t] * q).sum(-1)
    return value.mean()


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return pearson(_ranks(x), _ranks(y))


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties sharing their mean rank."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2)[inverse]


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    env = make_env(
        "mdp",
        seed=args.seed,
        num_states=args.num_states,
        num_actions=args.num_actions,
        max_steps=args.horizon,
        mdp_seed=args.mdp_seed,
    )
    shape = (env.horizon, env.num_states, env.num_actions)
    transitions, rewards = np.array(env.transitions), np.array(env.rewards)

    model_dir = resolve_model("tiny-random")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    action_ids = action_token_ids(tokenizer, env.action_words)
    prompts = state_prompts(env, tokenizer)
    ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    policy = copy.deepcopy(ref).train()
    with torch.no_grad():
        ref_logp = action_logp(ref, prompts, action_ids, shape)  # (H, S, A), frozen
    ref_probs = ref_logp.double().exp().numpy()

    q, v, pi_star = soft_value_iteration(transitions, rewards, ref_probs, args.beta, env.horizon)
    target = optimal_advantage(q, v)  # A*, (H, S, A)
    reward = np.broadcast_to(rewards, shape)  # r(s, a) at every step, (H, S, A)
    best = soft_policy_value(transitions, rewards, ref_probs, pi_star, args.beta, env.horizon)[0].mean()
    print(
        f"TextMDP S={env.num_states} A={env.num_actions} H={env.horizon} beta={args.beta}; "
        f"actions {env.action_words} -> tokens {action_ids}; gradient: {args.gradient}"
    )
    print(
        f"pi_ref range [{ref_probs.min():.3f}, {ref_probs.max():.3f}]; A* range [{target.min():+.3f}, "
        f"{target.max():+.3f}]; Pearson(A*, r) over all triples {pearson(target.ravel(), reward.ravel()):.4f}; "
        f"J(pi*) = {best:.4f}; J(pi_ref) = "
        f"{soft_policy_value(transitions, rewards, ref_probs, ref_probs, args.beta, env.horizon)[0].mean():.4f}"
    )

    optimizer = torch.optim.AdamW(policy.parameters(), lr=args.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1 - i / args.iterations)
    print("| iteration | visited triples | Pearson | Spearman | Pearson vs r | J(pi_theta) | J(pi*) - J | outcome |")
    print("|---|---|---|---|---|---|---|---|")
    started = time.perf_counter()
    for iteration in range(1, args.iterations + 1):
        policy_logp = action_logp(policy, prompts, action_ids, shape)  # (H, S, A), with grad
        logratio = (policy_logp - ref_logp).detach().double().numpy()
        probs = policy_logp.detach().double().exp().numpy()
        probs /= probs.sum(-1, keepdims=True)
        batch = sample_batch(env, probs, args.batch_size, rng)

        # --- algorithm ---
        if args.gradient == "sampled":
            weights = torch.from_numpy(reinforce_weights(batch, logratio, args.beta, shape)).float()
            loss = -(weights * policy_logp).sum()
        else:
            loss = -exact_objective(
                policy_logp,
                ref_logp,
                torch.from_numpy(transitions).float(),
                torch.from_numpy(rewards).float(),
                args.beta,
            )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()

        # --- plumbing: metrics of the policy that sampled this batch ---
        visited = np.zeros(shape, dtype=bool)
        for steps in batch:
            for t, s, a, _ in steps:
                visited[t, s, a] = True
        x, y = args.beta * logratio[visited], target[visited]
        value = soft_policy_value(transitions, rewards, ref_probs, probs, args.beta, env.horizon)[0].mean()
        outcome = np.mean([sum(step[3] for step in steps) for steps in batch])
        if iteration % args.print_every == 0 or iteration in (1, args.iterations):
            print(
                f"| {iteration} | {int(visited.sum())}/{visited.size} | {pearson(x, y):.4f} | {spearman(x, y):.4f} "
                f"| {pearson(x, reward[visited]):.4f} | {value:.4f} | {best - value:.5f} | {outcome:.3f} |",
                flush=True,
            )
    print(
        f"final: Pearson {pearson(x, y):.4f}, Spearman {spearman(x, y):.4f} over {int(visited.sum())} visited "
        f"triples; max |beta log pi_theta/pi_ref - A*| = {np.abs(x - y).max():.4f}; goal Pearson >= 0.95: "
        f"{'met' if pearson(x, y) >= 0.95 else 'not met'}; {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
