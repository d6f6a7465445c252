"""Benchmark of [logp]: the packed log-prob path vs pad + the model's full fp32 log_softmax, same trajectories.

    python benchmarks/bench_logp.py [--trajectories RUN_DIR/trajectories/iteration_00001.parquet ...]
        [--model smollm2-135m-instruct] [--dtype bfloat16] [--score actions|all] [--microbatch-tokens 1024]

ours:  learner/logp.py as the learner and the scorer run it: whole groups packed into one row with each shared
       prompt once, the LM head only at the scored tokens (action tokens, or every token with --score all).
naive: what a learner does without it: microbatches of --microbatch-size trajectories in batch order, right-padded,
       model(input_ids).logits over the full vocabulary in fp32, log_softmax, gather.
Both see the same trajectories (a real run's Parquet files, or synthetic groups that share a prompt), the same
dtype (bfloat16 = autocast over fp32 weights, as the learner on CPU), forward alone and forward+backward. Each
variant runs in a fresh spawned process, so its peak memory (max RSS, or CUDA allocated) is its own.
Tokens/s counts trajectory tokens (the same number for both paths). Prints a markdown table.
"""

import argparse
import gc
import multiprocessing
import resource
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

MODES = ("forward", "forward+backward")
PATHS = ("ours", "naive")


@dataclass(frozen=True)
class Result:
    tokens_per_s: float
    peak_mib: float


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trajectories", nargs="*", default=[], help="Parquet files of a run (default: synthetic)")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="built-in name or HF model directory")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    parser.add_argument("--score", choices=["actions", "all"], default="actions", help="which tokens get a logp")
    parser.add_argument("--microbatch-tokens", type=int, default=4096, help="ours: packed tokens per forward")
    parser.add_argument("--microbatch-size", type=int, default=8, help="naive: trajectories per forward")
    parser.add_argument("--groups", type=int, default=4, help="synthetic: groups of --group-size trajectories")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--prompt-len", type=int, default=150, help="synthetic: tokens of the shared prompt")
    parser.add_argument("--steps", type=int, default=4, help="synthetic: steps of 10 action + 15 observation tokens")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per variant; the best is kept")
    return parser.parse_args()


def load_batch(args: argparse.Namespace, vocab_size: int) -> tuple[list[np.ndarray], list[np.ndarray], list]:
    """(tokens, action masks, group ids) of the benchmark's trajectories."""
    if args.trajectories:
        import pyarrow.parquet as pq

        tokens, masks, groups = [], [], []
        for path in args.trajectories:
            table = pq.read_table(path)
            tokens += [np.asarray(t, np.int64) for t in table.column("tokens").to_pylist()]
            masks += [np.asarray(m, bool) for m in table.column("action_mask").to_pylist()]
            groups += table.column("group_id").to_pylist()
        return tokens, masks, groups
    rng = np.random.default_rng(0)
    tokens, masks, groups = [], [], []
    for g in range(args.groups):
        prompt = rng.integers(0, vocab_size, args.prompt_len)
        for _ in range(args.group_size):
            parts, flags = [prompt], [np.zeros(args.prompt_len, bool)]
            for _ in range(args.steps):
                parts += [rng.integers(0, vocab_size, 10), rng.integers(0, vocab_size, 15)]
                flags += [np.ones(10, bool), np.zeros(15, bool)]
            tokens.append(np.concatenate(parts))
            masks.append(np.concatenate(flags))
            groups.append(g)
    return tokens, masks, groups


def ours(model, batch, args: argparse.Namespace, backward: bool) -> None:
    from learner.logp import pack, packed_logp, plan

    tokens, masks, groups = batch
    scored = masks if args.score == "actions" else None
    for rows in plan(tokens, args.microbatch_tokens, groups):
        packed = pack([tokens[i] for i in rows], None if scored is None else [scored[i] for i in rows])
        with torch.set_grad_enabled(backward), autocast(args):
            logp = packed_logp(model, packed)
        if backward:
            logp.sum().backward()


def naive(model, batch, args: argparse.Namespace, backward: bool) -> None:
    tokens, masks, _ = batch
    for start in range(0, len(tokens), args.microbatch_size):
        rows = tokens[start : start + args.microbatch_size]
        ids = torch.zeros(len(rows), max(len(t) for t in rows), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, t in enumerate(rows):
            ids[b, : len(t)], mask[b, : len(t)] = torch.from_numpy(t), 1
        ids, mask = ids.to(args.device), mask.to(args.device)
        with torch.set_grad_enabled(backward), autocast(args):
            logits = model(input_ids=ids, attention_mask=mask).logits.float()  # (B, T, vocab_size)
            logp = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
            logp = torch.where(mask[:, 1:].bool(), logp, torch.zeros_like(logp))
        if backward:
            logp.sum().backward()


def autocast(args: argparse.Namespace):
    if args.dtype == "bfloat16" and args.device == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def load_model(args: argparse.Namespace):
    from transformers import AutoModelForCausalLM

    from cluster.models import resolve_model
    from learner.logp import prepare_model

    dtype = torch.bfloat16 if args.dtype == "bfloat16" and args.device != "cpu" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(resolve_model(args.model)), dtype=dtype).to(args.device)
    prepare_model(model)  # as the learner and scorer load it: tree attention (its own forward, naive's, stays sdpa)
    return model.train()


def memory_mib(device: str) -> float:
    """Peak memory of this process so far: allocated CUDA memory on GPU, max RSS on CPU."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # ru_maxrss is KiB on Linux


def reset_peak_memory(device: str) -> None:
    """Forget the peak so far, so transient copies made while loading the model are not counted."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        return
    gc.collect()
    # Writing 5 resets the kernel's RSS high-water mark, which ru_maxrss reports (Linux >= 4.0).
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def run_variant(args: argparse.Namespace, path: str, mode: str) -> Result:
    """Load the model, then time passes of `path` over the whole batch; runs in its own process."""
    model = load_model(args)
    batch = load_batch(args, model.config.vocab_size)
    run = ours if path == "ours" else naive
    backward = mode == "forward+backward"
    run(model, tuple(x[:2] for x in batch), args, backward)  # warm-up: one-off kernel setup is not timed
    model.zero_grad(set_to_none=True)
    reset_peak_memory(args.device)
    baseline = memory_mib(args.device)  # what is left is the variant's own
    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        run(model, batch, args, backward)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return Result(sum(len(t) for t in batch[0]) / best, memory_mib(args.device) - baseline)


def main() -> None:
    args = parse_args()
    context = multiprocessing.get_context("spawn")
    results: dict[tuple[str, str], Result] = {}
    for mode in MODES:
        for path in PATHS:
            with context.Pool(1) as pool:
                results[path, mode] = pool.apply(run_variant, (args, path, mode))
    tokens, masks, groups = load_batch(args, 49152)
    source = f"{len(args.trajectories)} Parquet file(s)" if args.trajectories else "synthetic groups"
    print(
        f"model {args.model}, {args.dtype} on {args.device}; {len(tokens)} trajectories ({source}) in "
        f"{len(set(groups))} groups, {sum(map(len, tokens))} tokens, {int(sum(m.sum() for m in masks))} action tokens; "
        f"scored: {args.score}; ours {args.microbatch_tokens} tokens per microbatch, naive {args.microbatch_size} "
        "trajectories"
    )
    print("| mode | ours tok/s | naive tok/s | speed ours/naive | ours peak MiB | naive peak MiB | memory ours/naive |")
    print("|---|---|---|---|---|---|---|")
    for mode in MODES:
        a, b = results["ours", mode], results["naive", mode]
        print(
            f"| {mode} | {a.tokens_per_s:.0f} | {b.tokens_per_s:.0f} | {a.tokens_per_s / b.tokens_per_s:.2f}× "
            f"| {a.peak_mib:.0f} | {b.peak_mib:.0f} | {a.peak_mib / max(b.peak_mib, 1e-9):.2f}× |"
        )


if __name__ == "__main__":
    main()
