"""Benchmark of [engine]: our VLLMEngine (bf16, fp32) vs transformers `generate` (fp32, bf16), same prompts.

Each arm runs in its own process (vLLM binds OpenMP threads in its process); after one warm-up the arms take
turns, best of `--repeats`. Throughput = generated tokens / wall time. Prints a markdown table and the ratios.
Run: python benchmarks/bench_engine.py   (defaults: smollm2-135m-instruct, 32 prompts x 64 tokens, temperature 1.0)
"""

import argparse
import asyncio
import multiprocessing
import os
import platform
import time
from dataclasses import dataclass

ARMS = ("vllm-bf16", "vllm-fp32", "hf-fp32", "hf-bf16")
TOPICS = (
    "the history of the bicycle",
    "how bread rises",
    "a lighthouse keeper's day",
    "volcanoes",
    "the water cycle",
    "learning to play chess",
    "a trip to the moon",
    "honey bees",
    "the invention of paper",
    "a rainy city at night",
    "how compilers work",
    "coral reefs",
    "a lost key",
    "the first winter of a young fox",
    "wind turbines",
    "the silk road",
    "a robot who learns to paint",
    "glaciers",
    "a market in the morning",
    "how vaccines work",
    "an old clock",
    "desert plants",
    "the printing press",
    "a storm at sea",
    "how maps are made",
    "a small bakery",
    "the life of a star",
    "a river journey",
    "trains in winter",
    "the human heart",
    "a forgotten library",
    "octopuses",
)


@dataclass(frozen=True)
class Run:
    seconds: float
    tokens: int  # tokens generated in the whole batch
    stopped_early: int  # prompts that ended before max_tokens


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="built-in name or HF model directory")
    parser.add_argument("--num-prompts", type=int, default=32, help="prompts in the batch")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens sampled per prompt")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats after one warm-up; best is kept")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {', '.join(ARMS)}")
    parser.add_argument("--kv-cache-gb", type=float, default=0.5, help="engine KV cache size")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return f"{os.cpu_count()} cores (nproc), {cpu}, {platform.machine()}"


def prompt_ids(model_dir: str, num_prompts: int) -> list[list[int]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    out = []
    for i in range(num_prompts):
        messages = [{"role": "user", "content": f"Write a long, detailed essay about {TOPICS[i % len(TOPICS)]}."}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        out.append(tokenizer.encode(text, add_special_tokens=False))
    return out


class VLLMArm:
    def __init__(self, model_dir: str, dtype: str, args: argparse.Namespace):
        from actors.engine import VLLMEngine

        self.engine = VLLMEngine(
            model_dir, dtype=dtype, seed=args.seed, max_model_len=1024, kv_cache_gb=args.kv_cache_gb
        )
        self.max_tokens = args.max_tokens

    def run(self, prompts: list[list[int]]) -> Run:
        # generate() has no ignore_eos: tokens actually generated are counted (the prompts ask for long answers).
        async def batch():
            return await asyncio.gather(
                *(self.engine.generate(ids, max_tokens=self.max_tokens, temperature=1.0) for ids in prompts)
            )

        start = time.perf_counter()
        completions = asyncio.run(batch())
        seconds = time.perf_counter() - start
        return Run(
            seconds,
            sum(len(c.token_ids) for c in completions),
            sum(len(c.token_ids) < self.max_tokens for c in completions),
        )


class HFArm:
    def __init__(self, model_dir: str, dtype: str, args: argparse.Namespace):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.manual_seed(args.seed)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
        self.max_tokens = args.max_tokens

    def run(self, prompts: list[list[int]]) -> Run:
        import torch

        batch = self.tokenizer.pad({"input_ids": prompts}, padding=True, return_tensors="pt")  # (B, T), left-padded
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(
                **batch,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=self.max_tokens,
                min_new_tokens=self.max_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        seconds = time.perf_counter() - start
        new = out.shape[1] - batch["input_ids"].shape[1]
        return Run(seconds, out.shape[0] * new, int(new < self.max_tokens) * out.shape[0])


def serve(arm: str, args: argparse.Namespace, conn) -> None:
    """One arm in its own process: build it, then run the batch whenever the parent asks."""
    from cluster.models import resolve_model

    model_dir = str(resolve_model(args.model))
    kind, dtype = arm.split("-")
    dtype = {"bf16": "bfloat16", "fp32": "float32"}[dtype]
    runner = (VLLMArm if kind == "vllm" else HFArm)(model_dir, dtype, args)
    prompts = prompt_ids(model_dir, args.num_prompts)
    conn.send("ready")
    while conn.recv() == "run":
        conn.send(runner.run(prompts))


def main() -> None:
    args = parse_args()
    arms = args.arms.split(",")
    assert set(arms) <= set(ARMS), f"unknown arm in {arms}"
    context = multiprocessing.get_context("spawn")
    conns, processes = {}, []
    for arm in arms:  # built one after another so start-up does not compete for the cores
        parent, child = context.Pipe()
        process = context.Process(target=serve, args=(arm, args, child), daemon=True)
        process.start()
        processes.append(process)
        assert parent.recv() == "ready"
        conns[arm] = parent
    runs: dict[str, list[Run]] = {arm: [] for arm in arms}
    for repeat in range(1 + args.repeats):  # repeat 0 is the warm-up
        for arm in arms:
            conns[arm].send("run")
            run = conns[arm].recv()
            print(
                f"repeat {repeat} {arm}: {run.tokens} tokens in {run.seconds:.2f} s, {run.stopped_early} stopped early",
                flush=True,
            )
            if repeat > 0:
                runs[arm].append(run)
    for conn in conns.values():
        conn.send("stop")
    for process in processes:
        process.join(timeout=60)

    best = {arm: max(r.tokens / r.seconds for r in runs[arm]) for arm in arms}
    print(f"\nmachine: {machine()}")
    batch = f"{args.num_prompts} prompts x {args.max_tokens} tokens"
    print(f"model {args.model}, {batch}, temperature 1.0, best of {args.repeats}\n")
    print("| arm | tokens/s (best) | tokens/s (each repeat) | tokens per batch | prompts stopped early |")
    print("|---|---|---|---|---|")
    for arm in arms:
        each = ", ".join(f"{r.tokens / r.seconds:.0f}" for r in runs[arm])
        tokens = "/".join(str(r.tokens) for r in runs[arm])
        early = "/".join(str(r.stopped_early) for r in runs[arm])
        print(f"| {arm} | {best[arm]:.0f} | {each} | {tokens} | {early} |")
    print()
    for num, den in (("vllm-bf16", "hf-fp32"), ("vllm-bf16", "hf-bf16"), ("vllm-fp32", "hf-fp32")):
        if num in best and den in best:
            print(f"{num} / {den} = {best[num] / best[den]:.2f}x")


if __name__ == "__main__":
    main()
