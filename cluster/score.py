"""`freelunch score`: the progress advantage of a (policy, reference) pair as a standalone scorer.

    freelunch score --policy DIR --ref DIR --input FILE --output FILE [--task none|bon|uq|fa] [--report DIR]

Input file -> actors/transcript.py (read, render, left-truncate) -> per-token logp of both models in
packed microbatches (learner/logp.py) -> learner/aggregate.py (step scores, trajectory score, the
two one-model baselines) -> output records (Parquet or JSONL, written atomically) -> summary.json, and
with --report cluster/score_report.py. CPU or the first GPU; with --ray N the log-probs are computed by N Ray
tasks over length-balanced shards (a running cluster under `ray job submit`, else a local one).
"""

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

from actors.trajectory import write_parquet
from actors.transcript import FORMATS, RENDERS, Tokenized, Transcript, read_transcripts, render
from cluster.files import write_atomically
from cluster.models import resolve_model
from learner.aggregate import (
    STEP_AGGS,
    TOKEN_AGGS,
    evaluate_bon,
    evaluate_fa,
    evaluate_uq,
    progress_scores,
    span_values,
    trajectory_score,
)

TASKS = ("none", "bon", "uq", "fa")
# Summary keys of the three scorers: the progress advantage and the one-model baselines (PAPER.md §3.3, §4.5).
METHODS = ("progress_adv", "policy_logp", "ref_logp")

OUTPUT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("task_id", pa.string()),
        pa.field("reward", pa.float64()),
        pa.field("step_scores", pa.list_(pa.float64())),  # one per message, null off actions
        pa.field("score", pa.float64()),  # null when the trajectory has no action message
        pa.field("policy_logp_score", pa.float64()),
        pa.field("ref_logp_score", pa.float64()),
        pa.field("num_tokens", pa.int64()),  # after truncation
        pa.field("truncated", pa.bool_()),
    ]
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", required=True, help="policy model directory (post-trained; the numerator)")
    parser.add_argument("--ref", required=True, help="reference model directory (the denominator)")
    parser.add_argument("--input", required=True, help="trajectories: .parquet, tau2-bench/Who&When .json, chat .jsonl")
    parser.add_argument("--output", required=True, help="one record per trajectory: Parquet if *.parquet, else JSONL")
    parser.add_argument("--format", default="auto", choices=FORMATS, help="input format (auto: by extension/content)")
    parser.add_argument("--render", default="paper", choices=RENDERS, help="paper: official plain text; chat: template")
    parser.add_argument("--token-agg", default="mean", choices=TOKEN_AGGS, help="per model over a step's action tokens")
    parser.add_argument("--step-agg", default="mean", choices=STEP_AGGS, help="over the steps of a trajectory")
    parser.add_argument("--beta", type=float, default=1.0, help="scale of the log-ratio (rank-based uses ignore it)")
    parser.add_argument("--max-length", type=int, default=16384, help="left-truncate longer trajectories (tokens)")
    parser.add_argument("--task", default="none", choices=TASKS, help="best-of-N, uncertainty or failure steps")
    parser.add_argument("--report", metavar="DIR", help="write summary.json, report.html and PNG plots here")
    parser.add_argument("--microbatch-tokens", type=int, default=4096, help="token budget of one packed forward")
    parser.add_argument("--ray", type=int, default=0, metavar="N", help="spread trajectories over N Ray workers")


def run_score(args: argparse.Namespace) -> int:
    """The command. Bad input exits with 2 and one line naming the cause, before anything is written."""
    try:
        _check(args)
        transcripts, fmt = read_transcripts(args.input, args.format)
        policy_dir, ref_dir = _model_dir(args.policy), _model_dir(args.ref)
        tokenizer = shared_tokenizer(policy_dir, ref_dir)
        tokens = [render(t, tokenizer, args.render, args.max_length) for t in transcripts]
    except (ValueError, FileNotFoundError) as error:  # InputError is a ValueError
        print(f"freelunch: {error}", file=sys.stderr)
        return 2
    # --- algorithm ---
    logp = ray_pair_logp if args.ray else pair_logp
    policy_logp, ref_logp = logp(
        policy_dir,
        ref_dir,
        tokens,
        [t.task_id for t in transcripts],
        args.microbatch_tokens,
        **({"workers": args.ray} if args.ray else {}),
    )
    steps = step_scores(tokens, policy_logp, ref_logp, token_agg=args.token_agg, beta=args.beta)
    scores = {m: [trajectory_score(s, args.step_agg) for s in steps[m]] for m in METHODS}
    # --- plumbing ---
    summary = dict(policy=policy_dir, ref=ref_dir, input=os.path.abspath(args.input), format=fmt)
    summary.update({k: getattr(args, k) for k in ("render", "token_agg", "step_agg", "beta", "max_length")})
    summary.update(summarize(transcripts, tokens, steps, scores, args.task))
    write_records(records(transcripts, tokens, steps["progress_adv"], scores), args.output)
    out_dir = Path(args.report or os.path.dirname(os.path.abspath(args.output)))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(out_dir / "summary.json", json.dumps(_finite(summary), indent=2) + "\n")
    if args.report:
        from cluster.score_report import write_report

        write_report(out_dir, summary, transcripts, steps["progress_adv"], scores)
    print(f"freelunch: scored {len(transcripts)} trajectories -> {args.output}; summary in {out_dir / 'summary.json'}")
    return 0


def _check(args: argparse.Namespace) -> None:
    if args.max_length < 2:
        raise ValueError(f"--max-length must be at least 2 (a logp needs a token before it), got {args.max_length}")
    if args.ray < 0:
        raise ValueError(f"--ray must be a number of workers >= 1, got {args.ray}")
    if args.microbatch_tokens < 1:
        raise ValueError(f"--microbatch-tokens must be at least 1, got {args.microbatch_tokens}")
    if args.report:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise ValueError("--report needs matplotlib: pip install 'freelunch[report]'")


def _model_dir(model: str) -> str:
    return str(resolve_model(model))


def shared_tokenizer(policy_dir: str, ref_dir: str):
    """The policy's tokenizer, after checking that the reference has the same (PAPER.md §9.7)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    if ref_dir != policy_dir:
        ref = AutoTokenizer.from_pretrained(ref_dir)
        # Both models must see one token sequence; a different vocabulary or BOS would give them two.
        if tokenizer.get_vocab() != ref.get_vocab() or tokenizer.bos_token_id != ref.bos_token_id:
            raise ValueError(
                f"policy {policy_dir} and reference {ref_dir} have different tokenizers (vocabularies of "
                f"{len(tokenizer.get_vocab())} and {len(ref.get_vocab())} entries, BOS {tokenizer.bos_token_id} "
                f"and {ref.bos_token_id}); the progress advantage needs one shared tokenizer"
            )
    return tokenizer


def pair_logp(
    policy_dir: str, ref_dir: str, tokens: list[Tokenized], groups: list[str], max_tokens: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per trajectory the (T,) logp of every action-message token under the policy and under the reference
    (0 elsewhere).

    Both models run in one dtype (fp32 on CPU, bf16 on GPU) on the same packed microbatches, so kernel error
    cancels in the ratio (PAPER.md §9.8). The same directory twice is loaded once.
    """
    import torch

    from learner.logp import load_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    def load(model_dir: str) -> torch.nn.Module:
        return load_model(model_dir, dtype=dtype, device=device).eval().requires_grad_(False)

    models = [load(policy_dir)] if ref_dir == policy_dir else [load(policy_dir), load(ref_dir)]
    logp = score_logp(models, tokens, groups, max_tokens)
    return logp[0], logp[-1]


def ray_pair_logp(
    policy_dir: str, ref_dir: str, tokens: list[Tokenized], groups: list[str], max_tokens: int, *, workers: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """pair_logp over `workers` Ray tasks of one CPU (or GPU) each; shards dealt longest first, so balanced."""
    import ray

    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(namespace="freelunch")
        else:
            ray.init(num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1", namespace="freelunch")
    order = sorted(range(len(tokens)), key=lambda i: -len(tokens[i].ids))
    shards = [shard for shard in (order[w::workers] for w in range(workers)) if shard]
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= workers else 0
    task = ray.remote(num_cpus=1, num_gpus=gpus)(pair_logp)
    refs = [
        task.remote(policy_dir, ref_dir, [tokens[i] for i in shard], [groups[i] for i in shard], max_tokens)
        for shard in shards
    ]
    policy_logp: list = [None] * len(tokens)
    ref_logp: list = [None] * len(tokens)
    # No timeout: a scoring job's length grows with its data; a dead worker raises here instead of hanging.
    for shard, (policy, ref) in zip(shards, ray.get(refs)):
        for i, p, r in zip(shard, policy, ref):
            policy_logp[i], ref_logp[i] = p, r
    return policy_logp, ref_logp


def score_logp(models: list, tokens: list[Tokenized], groups: list[str], max_tokens: int) -> list[list[np.ndarray]]:
    """For each model, per trajectory the (T,) logp of each action-message token (what the step scores read),
    0 elsewhere. Trajectories of one group (task) are packed together, so best-of-N candidates share their
    prompt; a progress line on stderr counts trajectories."""
    from learner.logp import sequence_logp

    sequences = [np.asarray(t.ids, dtype=np.int64) for t in tokens]
    scored = [action_tokens(t) for t in tokens]

    def progress(done: int) -> None:
        print(f"\rfreelunch score: {done}/{len(tokens)} trajectories", end="", file=sys.stderr, flush=True)

    out = []
    for model in models:
        out.append(
            sequence_logp(model, sequences, scored=scored, groups=groups, max_tokens=max_tokens, progress=progress)
        )
        print(file=sys.stderr)
    return out


def action_tokens(t: Tokenized) -> np.ndarray:
    """(T,) bool: the tokens inside the spans of action messages."""
    mask = np.zeros(len(t.ids), dtype=bool)
    for (start, end), action in zip(t.spans, t.is_action):
        mask[start:end] |= action
    return mask


def step_scores(
    tokens: list[Tokenized], policy_logp: list[np.ndarray], ref_logp: list[np.ndarray], *, token_agg: str, beta: float
) -> dict[str, list[list[float | None]]]:
    """Per method, per trajectory, per message: the step score (None off actions)."""
    steps: dict[str, list[list[float | None]]] = {m: [] for m in METHODS}
    for t, policy, ref in zip(tokens, policy_logp, ref_logp):
        policy_spans = span_values(policy, t.spans, t.is_action)
        ref_spans = span_values(ref, t.spans, t.is_action)
        steps["progress_adv"].append(progress_scores(policy_spans, ref_spans, t.is_action, token_agg, beta))
        steps["policy_logp"].append(progress_scores(policy_spans, None, t.is_action, token_agg, beta))
        steps["ref_logp"].append(progress_scores(ref_spans, None, t.is_action, token_agg, beta))
    return steps


def summarize(transcripts: list[Transcript], tokens: list[Tokenized], steps: dict, scores: dict, task: str) -> dict:
    """Counts, plus the metrics of --task for the progress advantage and both baselines."""
    summary: dict = {
        "task": task,
        "num_trajectories": len(transcripts),
        "num_truncated": sum(t.truncated for t in tokens),
        "num_tokens": sum(len(t.ids) for t in tokens),
    }
    rewards = [t.reward for t in transcripts]
    if task == "bon":
        task_ids = [t.task_id for t in transcripts]
        summary["bon"] = {m: evaluate_bon(task_ids, scores[m], rewards) for m in METHODS}
    elif task == "uq":
        summary["uq"] = {"success": "reward > 0.5", **{m: evaluate_uq(scores[m], rewards) for m in METHODS}}
    elif task == "fa":
        mistake_steps = [t.mistake_step for t in transcripts]
        summary["fa"] = {m: evaluate_fa(steps[m], mistake_steps) for m in METHODS}
    return summary


def records(transcripts: list[Transcript], tokens: list[Tokenized], steps: list, scores: dict) -> list[dict]:
    """One output record per trajectory (OUTPUT_SCHEMA)."""
    return [
        {
            "id": transcript.trajectory_id,
            "task_id": transcript.task_id,
            "reward": transcript.reward,
            "step_scores": steps[i],
            "score": scores["progress_adv"][i],
            "policy_logp_score": scores["policy_logp"][i],
            "ref_logp_score": scores["ref_logp"][i],
            "num_tokens": len(tokens[i].ids),
            "truncated": tokens[i].truncated,
        }
        for i, transcript in enumerate(transcripts)
    ]


def write_records(rows: list[dict], path: str) -> None:
    """Parquet when the name ends in .parquet, else JSONL; atomically, so a failed run leaves no partial file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.endswith(".parquet"):
        write_parquet(pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA), path)
    else:
        write_atomically(Path(path), "".join(json.dumps(_finite(r)) + "\n" for r in rows))


def _finite(value):
    """nan and inf as null: JSON has no spelling for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
