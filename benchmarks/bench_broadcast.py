"""Benchmark of [weight broadcast]: plan_buckets + send/receive vs one raw gloo broadcast of the same bytes.

Rank 0 (learner side, the policy's fp32 parameters) and rank 1 (rollout side) are spawned processes; arms
`ours`, `ours+load` (then VLLMEngine.load_weights), `raw` (fresh buffer), `raw-reused`; median of `--repeats`.
Run: python benchmarks/bench_broadcast.py   (defaults: smollm2-135m-instruct, bucket_mb 64, 5 repeats)
"""

import argparse
import multiprocessing
import os
import platform
import statistics
import time

ARMS = ("ours", "ours+load", "raw", "raw-reused")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="built-in name or HF model directory")
    parser.add_argument("--bucket-mb", type=float, default=64, help="plan_buckets bucket size")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats after one warm-up; the median is kept")
    parser.add_argument("--no-load", action="store_true", help="skip the ours+load arm (no vLLM engine)")
    return parser.parse_args()


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return f"{os.cpu_count()} cores (nproc), {cpu}, {platform.machine()}"


def barrier(group) -> None:
    group.barrier().wait()


def raw_broadcast(group, flat) -> None:
    import torch.distributed as dist

    options = dist.BroadcastOptions()
    options.rootRank = 0
    group.broadcast([flat], options).wait()


def learner_side(args: argparse.Namespace, ports: dict[str, int], arms: list[str], specs, results) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from actors.broadcast import weight_sync_group
    from cluster.models import resolve_model
    from learner.broadcast import plan_buckets, send

    model = AutoModelForCausalLM.from_pretrained(resolve_model(args.model), dtype=torch.float32)
    weights = {name: p.detach() for name, p in model.named_parameters()}
    buckets = plan_buckets(weights.items(), args.bucket_mb)
    flat = torch.cat([t.reshape(-1) for t in weights.values()])  # (N,) the raw arms' payload, built once
    specs.put(buckets)
    groups = {arm: weight_sync_group("127.0.0.1", ports[arm], 0, 2)[1] for arm in arms}
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    send_buffers: dict[str, list] = {arm: [] for arm in arms}  # kept across broadcasts, as the learner does
    for repeat in range(1 + args.repeats):
        for arm in arms:
            barrier(groups[arm])
            start = time.perf_counter()
            if arm.startswith("ours"):
                sent = send(groups[arm], buckets, weights, send_buffers[arm])
            else:
                raw_broadcast(groups[arm], flat)
                sent = flat.numel() * flat.element_size()
            barrier(groups[arm])  # rank 1 is done (received, and loaded for ours+load)
            if repeat > 0:
                times[arm].append(time.perf_counter() - start)
    results.put(("learner", {"times": times, "bytes": sent, "num_buckets": len(buckets), "numel": flat.numel()}))


def rollout_side(args: argparse.Namespace, ports: dict[str, int], arms: list[str], specs, results) -> None:
    import torch

    from actors.broadcast import receive, weight_sync_group
    from cluster.models import resolve_model

    engine = None
    if "ours+load" in arms:
        from actors.engine import VLLMEngine

        engine = VLLMEngine(str(resolve_model(args.model)), dtype="float32", max_model_len=1024, kv_cache_gb=0.25)
    buckets = specs.get()
    numel = sum(int(torch.Size(shape).numel()) for spec in buckets for _, shape, _ in spec)
    reused = torch.zeros(numel)  # (N,) touched once, so the raw-reused arm never page-faults
    groups = {arm: weight_sync_group("127.0.0.1", ports[arm], 1, 2)[1] for arm in arms}
    receive_s: dict[str, list[float]] = {arm: [] for arm in arms}
    receive_buffers: dict[str, list] = {arm: [] for arm in arms}  # kept across broadcasts, as rollout actors do
    load_s: list[float] = []
    for repeat in range(1 + args.repeats):
        for arm in arms:
            barrier(groups[arm])
            start = time.perf_counter()
            if arm.startswith("ours"):
                named = receive(groups[arm], buckets, receive_buffers[arm])
            else:
                buffer = torch.empty(numel) if arm == "raw" else reused
                raw_broadcast(groups[arm], buffer)
            received = time.perf_counter()
            if arm == "ours+load":
                engine.load_weights(named)
                if repeat > 0:
                    load_s.append(time.perf_counter() - received)
            barrier(groups[arm])
            if repeat > 0:
                receive_s[arm].append(received - start)
    results.put(("rollout", {"receive_s": receive_s, "load_s": load_s}))


def main() -> None:
    args = parse_args()
    from learner.learner import free_port

    arms = [arm for arm in ARMS if not (args.no_load and arm == "ours+load")]
    ports = {arm: free_port() for arm in arms}
    context = multiprocessing.get_context("spawn")
    specs, results = context.Queue(), context.Queue()
    processes = [
        context.Process(target=side, args=(args, ports, arms, specs, results)) for side in (learner_side, rollout_side)
    ]
    for process in processes:
        process.start()
    out = dict(results.get(timeout=600) for _ in processes)
    for process in processes:
        process.join(timeout=60)

    nbytes = out["learner"]["bytes"]
    receive_s, load_s = out["rollout"]["receive_s"], out["rollout"]["load_s"]
    median = {arm: statistics.median(receive_s[arm]) for arm in arms}
    print(f"\nmachine: {machine()}")
    print(
        f"model {args.model}: {out['learner']['numel'] / 1e6:.1f} M fp32 parameters, {nbytes / 1e6:.0f} MB, "
        f"{out['learner']['num_buckets']} buckets of <= {args.bucket_mb:g} MB; median of {args.repeats}\n"
    )
    print("| arm | median s | GB/s | each repeat, s | sender's median s |")
    print("|---|---|---|---|---|")
    senders = out["learner"]["times"]
    rows = [(arm, receive_s[arm], senders[arm]) for arm in arms]  # (label, rank 1 seconds, rank 0 seconds)
    if load_s:
        at = arms.index("ours+load")
        totals = [r + load for r, load in zip(receive_s["ours+load"], load_s)]
        median["ours+load total"] = statistics.median(totals)
        rows[at : at + 1] = [
            ("ours+load: receive", receive_s["ours+load"], None),
            ("ours+load: load_weights", load_s, None),
            ("ours+load: receive + load", totals, senders["ours+load"]),
        ]
    for label, seconds, sender in rows:
        sender_cell = f"{statistics.median(sender):.3f}" if sender else ""
        m = statistics.median(seconds)
        each = ", ".join(f"{s:.3f}" for s in seconds)
        print(f"| {label} | {m:.3f} | {nbytes / m / 1e9:.2f} | {each} | {sender_cell} |")
    print()
    for baseline in ("raw", "raw-reused"):
        print(f"transport: ours / {baseline} = {median['ours'] / median[baseline]:.2f}x")
        if load_s:
            ratio = median["ours+load total"] / median[baseline]
            print(f"transport+load: (ours receive + load) / {baseline} = {ratio:.2f}x")


if __name__ == "__main__":
    main()
