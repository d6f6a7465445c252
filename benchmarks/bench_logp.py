"""Benchmark of [logp]: length-sorted microbatches + chunked token_logp vs the naive full log_softmax gather.

Each variant runs in a fresh spawned process, so its peak memory is its own. Prints a markdown table.
Run: python benchmarks/bench_logp.py --layers 2 --num 8   (default model: SmolLM2-135M shapes, random weights)
"""

import argparse
import gc
import multiprocessing
import resource
import time
from dataclasses import dataclass

import torch
import transformers

from learner.logp import microbatches, pad, token_logp

MODES = ("forward", "forward+backward")
PATHS = ("ours", "naive")


@dataclass(frozen=True)
class Result:
    tokens_per_s: float
    peak_mib: float


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="HF model directory; default: random SmolLM2-135M shapes")
    parser.add_argument("--layers", type=int, default=30, help="decoder layers of the random model")
    parser.add_argument("--num", type=int, default=32, help="trajectories")
    parser.add_argument("--min-len", type=int, default=64, help="shortest trajectory, tokens")
    parser.add_argument("--max-len", type=int, default=1024, help="longest trajectory, tokens")
    parser.add_argument("--microbatch-size", type=int, default=8, help="trajectories per forward")
    parser.add_argument("--chunk-size", type=int, default=1024, help="token_logp chunk_size")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def load_model(args: argparse.Namespace) -> transformers.PreTrainedModel:
    dtype = getattr(torch, args.dtype)
    if args.model is not None:
        model = transformers.AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype)
    else:
        torch.manual_seed(args.seed)
        config = transformers.LlamaConfig(
            vocab_size=49152,
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=args.layers,
            num_attention_heads=9,
            num_key_value_heads=3,
            head_dim=64,
            tie_word_embeddings=True,
        )
        model = transformers.LlamaForCausalLM(config).to(dtype)
    return model.to(args.device).eval()


def make_trajectories(args: argparse.Namespace, vocab_size: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(args.seed)
    lengths = torch.randint(args.min_len, args.max_len + 1, (args.num,), generator=generator).tolist()
    return [torch.randint(0, vocab_size, (n,), generator=generator) for n in lengths]


def ours(model: torch.nn.Module, trajectories: list[torch.Tensor], args: argparse.Namespace, backward: bool) -> None:
    for indices in microbatches([len(t) for t in trajectories], args.microbatch_size):
        input_ids, attention_mask = pad([trajectories[i] for i in indices])  # (B, T)
        input_ids, attention_mask = input_ids.to(args.device), attention_mask.to(args.device)
        with torch.set_grad_enabled(backward):
            logp = token_logp(model, input_ids, attention_mask, chunk_size=args.chunk_size)  # (B, T)
        if backward:
            logp.sum().backward()


def naive(model: torch.nn.Module, trajectories: list[torch.Tensor], args: argparse.Namespace, backward: bool) -> None:
    # The whole batch padded to its longest trajectory, then cut into microbatches of rows in
    # arrival order: what a learner does without length sorting or chunked log-probs.
    input_ids, attention_mask = pad(trajectories)  # (B, T)
    for start in range(0, len(trajectories), args.microbatch_size):
        ids = input_ids[start : start + args.microbatch_size].to(args.device)
        mask = attention_mask[start : start + args.microbatch_size].to(args.device)
        with torch.set_grad_enabled(backward):
            logits = model(input_ids=ids, attention_mask=mask).logits.float()  # (B, T, vocab_size)
            logp = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
            logp = torch.where(mask[:, 1:].bool(), logp, torch.zeros_like(logp))
        if backward:
            logp.sum().backward()


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
    """Load the model, then time one pass of `path` over all trajectories; runs in its own process."""
    model = load_model(args)
    reset_peak_memory(args.device)
    baseline = memory_mib(args.device)  # right after model load: what is left is the variant's own
    trajectories = make_trajectories(args, model.config.vocab_size)
    run = ours if path == "ours" else naive
    backward = mode == "forward+backward"
    # Warm-up on two short trajectories so one-off kernel setup is not timed; its peak is below the run's.
    run(model, [t[: args.min_len] for t in trajectories[:2]], args, backward)

    start = time.perf_counter()
    run(model, trajectories, args, backward)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return Result(sum(len(t) for t in trajectories) / seconds, memory_mib(args.device) - baseline)


def main() -> None:
    args = parse_args()
    context = multiprocessing.get_context("spawn")
    results: dict[tuple[str, str], Result] = {}
    for mode in MODES:
        for path in PATHS:
            with context.Pool(1) as pool:
                results[path, mode] = pool.apply(run_variant, (args, path, mode))

    model_name = args.model or f"random SmolLM2-135M shapes, {args.layers} layers"
    print(
        f"model: {model_name}; {args.dtype} on {args.device}; {args.num} trajectories of "
        f"{args.min_len}-{args.max_len} tokens; microbatch_size {args.microbatch_size}; chunk_size {args.chunk_size}"
    )
    print("| mode | ours tok/s | naive tok/s | speed ours/naive | ours peak MiB | naive peak MiB | memory ours/naive |")
    print("|---|---|---|---|---|---|---|")
    for mode in MODES:
        a, b = results["ours", mode], results["naive", mode]
        print(
            f"| {mode} | {a.tokens_per_s:.0f} | {b.tokens_per_s:.0f} | {a.tokens_per_s / b.tokens_per_s:.2f} "
            f"| {a.peak_mib:.0f} | {b.peak_mib:.0f} | {a.peak_mib / max(b.peak_mib, 1e-9):.2f} |"
        )


if __name__ == "__main__":
    main()
