"""[update] Learner: one DeepSpeed ZeRO rank of the policy; N ranks form the learner role.

scorer -> advantage -> [loss -> update] -> broadcast. Each rank takes every world_size-th trajectory
of the batch, runs its microbatches (chunked log-probs -> policy_loss -> backward) and DeepSpeed
applies one optimizer update per iteration. Rank 0 also sends the weights to the engines.
"""

import math
import os
import shutil
import socket
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from actors.broadcast import tcp_store, weight_sync_group
from actors.trajectory import from_ipc, ragged
from learner.broadcast import plan_buckets, send
from learner.config import LearnerConfig
from learner.logp import load_model, pack, packed_logp, plan
from learner.loss import policy_loss

BUCKET_MB = 64.0


class Learner:
    def __init__(
        self,
        cfg: LearnerConfig,
        *,
        model_dir: str,
        temperature: float,
        rank: int,
        world_size: int,
        seed: int,
        num_updates: int,
    ):
        self.cfg, self.model_dir, self.temperature = cfg, model_dir, temperature
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.num_updates = num_updates  # of the run (one per iteration): the horizon of the learning-rate schedule
        self._broadcast_group = None
        self._send_buffers: list = []

    def setup(self, address: str, port: int) -> None:
        """Join the learner world (all ranks concurrently, rendezvous at rank 0's address:port); build the policy."""
        import deepspeed
        from transformers import AutoTokenizer

        torch.manual_seed(self.seed + self.rank)
        init_distributed(self.rank, self.world_size, address, port)
        self.device = default_device()
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        # refuses a model family the log-prob path would score wrong, before any update
        model = load_model(self.model_dir, dtype=weights_dtype(self.cfg, self.device), device=self.device)
        optimizer = adamw(model, self.cfg.lr)
        c = self.cfg
        # LambdaLR multiplies lr by the factor; DeepSpeed steps it with each update and keeps it in checkpoints.
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda update: lr_factor(update, c.lr_schedule, c.lr_warmup_iterations, self.num_updates, c.lr_min_ratio),
        )
        self.engine, *_ = deepspeed.initialize(
            model=model,
            optimizer=optimizer,
            lr_scheduler=schedule,
            config=deepspeed_config(self.cfg, self.world_size, self.device),
        )

    # --- algorithm ---
    def update(self, batch: bytes) -> dict[str, float]:
        """One optimizer update on the batch (an Arrow IPC table with ref_logp and step_advantage)."""
        table = from_ipc(batch)
        columns = {
            name: ragged(table, name)
            for name in ("tokens", "action_mask", "step_index", "behavior_logp", "ref_logp", "step_advantage")
        }
        num_tokens = float(sum(int(mask.sum()) for mask in columns["action_mask"]))  # over all ranks
        group_ids = table.column("group_id").to_pylist()
        rows = rank_rows(table.num_rows, self.rank, self.world_size)
        microbatches = plan(
            [columns["tokens"][i] for i in rows], self.cfg.microbatch_tokens, [group_ids[i] for i in rows]
        )
        microbatches = self._as_many_as_every_rank(microbatches)
        totals: dict[str, float] = defaultdict(float)
        self.engine.train()
        # One autocast region for the whole update: the bf16 copies of the weights are cast once, not per microbatch.
        with autocast(self.cfg, self.device):
            for microbatch in microbatches:
                metrics = self._backward([rows[i] for i in microbatch], columns, num_tokens)
                for key, value in metrics.items():
                    totals[key] += value * (1.0 if key == "tokens" else metrics["tokens"])
        unclipped_norm = None if self.world_size > 1 else grad_norm(self.engine.module)  # stage 0 records none
        lr = self.engine.get_lr()[0]  # the rate this update applies; step() then moves the schedule on
        self.engine.step()  # the update's one accumulation boundary (deepspeed_config: unmanaged accumulation)
        tokens = max(totals.pop("tokens"), 1.0)
        result = {key: value / tokens for key, value in totals.items()}
        result["tokens"] = tokens
        result["loss/lr"] = float(lr)
        result["loss/grad_norm"] = float(
            unclipped_norm if unclipped_norm is not None else self.engine.get_global_grad_norm()
        )
        return result

    def _backward(self, rows: list[int], columns: dict, num_tokens: float) -> dict[str, float]:
        """Forward and backward of one packed microbatch; per-token tensors hold its action tokens only."""
        packed = pack([columns["tokens"][i] for i in rows], [columns["action_mask"][i] for i in rows])

        def on_actions(values: list[np.ndarray]) -> torch.Tensor:  # (1, M) in the order of packed.order()
            return torch.from_numpy(packed.on_scored(values))[None].to(self.device)

        advantage = [_token_advantage(columns["step_advantage"][i], columns["step_index"][i]) for i in rows]
        logp, entropy = packed_logp(
            self.engine.module,
            packed,
            temperature=self.temperature,
            chunk_size=self.cfg.logp_chunk_size,
            with_entropy=True,
        )
        order = packed.order().to(self.device)
        policy_logp = logp[order][None]  # (1, M)
        loss, metrics = policy_loss(
            policy_logp,
            on_actions([columns["behavior_logp"][i] for i in rows]),
            on_actions([columns["ref_logp"][i] for i in rows]),
            on_actions(advantage),
            torch.ones_like(policy_logp, dtype=torch.bool),
            max_importance_ratio=self.cfg.max_importance_ratio,
            kl_coef=self.cfg.kl_coef,
            kl_estimator=self.cfg.kl_estimator,
            num_tokens=num_tokens,
        )
        self._stop_if_not_finite(loss)
        metrics["loss/entropy"] = float(entropy[order].mean()) if order.numel() else 0.0  # the sampling distribution
        # --- plumbing ---
        # The loss is already a token mean over the whole batch, and DeepSpeed averages gradients over ranks.
        self.engine.backward(loss * self.world_size, scale_wrt_gas=False)
        return metrics

    def _as_many_as_every_rank(self, microbatches: list[list[int]]) -> list[list[int]]:
        """Split microbatches until this rank has as many as the rank with the most: each backward takes part in
        ZeRO's gradient collectives, so every rank must run the same number."""
        if self.world_size == 1:
            return microbatches
        count = torch.tensor([len(microbatches)], dtype=torch.long, device=self.device)
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
        return split_to(microbatches, int(count.item()))

    def _stop_if_not_finite(self, loss: torch.Tensor) -> None:
        # Every rank must agree before anyone raises, or the healthy ranks hang in the next all-reduce.
        finite = torch.tensor([1.0 if bool(torch.isfinite(loss)) else 0.0], device=self.device)
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if finite.item() == 0.0:
            raise FloatingPointError(
                f"non-finite policy loss ({loss.item()}) on learner rank {self.rank}: no update was applied"
            )

    # --- plumbing ---
    def free_port(self) -> int:
        return free_port()

    def weight_buckets(self) -> list:
        return plan_buckets(self._full_weights().items(), BUCKET_MB) if self.rank == 0 else []

    def connect_rollout(self, address: str, port: int, world_size: int) -> None:
        """Join the broadcast group as its rank 0 (learner rank 0 only)."""
        self._broadcast_group = weight_sync_group(address, port, 0, world_size)

    def broadcast(self) -> int:
        """Send the current weights to every rollout actor (they call receive concurrently); returns bytes."""
        weights = self._full_weights()  # every rank joins the ZeRO-3 gather
        if self.rank != 0:
            return 0
        return send(self._broadcast_group[1], plan_buckets(weights.items(), BUCKET_MB), weights, self._send_buffers)

    def save_policy(self, path: str) -> None:
        """Write the policy as a transformers directory, atomically (rank 0 writes; all ranks gather)."""
        weights = self._full_weights()
        if self.rank != 0:
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".policy-", dir=target.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the policy is meant to be shared
        self.engine.module.save_pretrained(tmp, state_dict=weights)
        self.tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)

    def save_checkpoint(self, path: str) -> None:
        """DeepSpeed state of every rank (weights, optimizer, scheduler) under path/learner; all ranks call it."""
        self.engine.save_checkpoint(path, tag="learner")

    def load_checkpoint(self, path: str) -> None:
        loaded, _ = self.engine.load_checkpoint(path, tag="learner")
        if loaded is None:
            raise FileNotFoundError(f"no learner checkpoint in {path}")

    def _full_weights(self) -> dict[str, torch.Tensor]:
        import deepspeed

        module = self.engine.module
        if self.cfg.zero_stage == 3:
            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                return {name: p.detach().to("cpu", copy=True) for name, p in module.named_parameters()}
        return {name: p.detach().cpu() for name, p in module.named_parameters()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def init_distributed(rank: int, world_size: int, address: str, port: int) -> None:
    """The DeepSpeed world of one role: gloo on CPU, NCCL on GPU, rendezvous at address:port."""
    import deepspeed

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "gloo":
        # DeepSpeed's CPU accelerator JIT-compiles a shared-memory op (~1 min) that only its inference
        # all-reduce uses; training over gloo never touches it.
        import sys

        import deepspeed.comm.torch  # noqa: F401

        sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None
    os.environ.update(
        MASTER_ADDR=address, MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK="0"
    )
    if not dist.is_initialized():
        store = tcp_store(address, port, world_size, rank == 0, timeout_s=600.0)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size)
    deepspeed.init_distributed(dist_backend=backend)


def deepspeed_config(cfg: LearnerConfig, world_size: int, device: torch.device) -> dict:
    """DeepSpeed's JSON config, generated from LearnerConfig (never a second file to keep in sync).

    Microbatches are packed to a token budget, so their number varies per update: accumulation is unmanaged
    (every engine.step() is the boundary), and the batch-size entries are only DeepSpeed's bookkeeping.
    """
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "train_batch_size": world_size,
        "managed_gradient_accumulation": False,
        # ZeRO partitions state over ranks; a world of one has nothing to partition, and stage 2's per-backward
        # gradient bucketing then measured 2.5 s of an update on CPU (benchmarks/RESULTS.md), so it runs stage 0.
        "zero_optimization": {"stage": cfg.zero_stage if world_size > 1 else 0},
        "gradient_clipping": cfg.max_grad_norm,
        "bf16": {"enabled": weights_dtype(cfg, device) == torch.bfloat16},
        "steps_per_print": 2**31 - 1,
    }


def grad_norm(module: torch.nn.Module) -> float:
    """The L2 norm of all gradients, before clipping."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


def rank_rows(num_rows: int, rank: int, world_size: int) -> list[int]:
    """This rank's contiguous share of the batch. The batch comes in task order with each group's trajectories
    together, so a contiguous share keeps a group (and its shared prompt) on one rank where it can."""
    return [int(i) for i in np.array_split(np.arange(num_rows), world_size)[rank]]


def split_to(microbatches: list[list[int]], count: int) -> list[list[int]]:
    """Halve the largest microbatch until there are `count` (needs count <= the number of sequences)."""
    out = [list(m) for m in microbatches]
    while len(out) < count:
        largest = max(range(len(out)), key=lambda i: len(out[i]))
        if len(out[largest]) < 2:
            raise ValueError(f"cannot split {sum(map(len, out))} sequences into {count} microbatches")
        half = len(out[largest]) // 2
        out[largest : largest + 1] = [out[largest][:half], out[largest][half:]]
    return out


def lr_factor(update: int, schedule: str, warmup: int, num_updates: int, min_ratio: float) -> float:
    """The learning rate of update `update` (0-based) as a share of the peak: a linear warmup over `warmup`
    updates (the first at 1/warmup), then constant, or a linear or half-cosine decay that would reach
    `min_ratio` at update `num_updates`."""
    if update < warmup:
        return (update + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (update - warmup) / max(1, num_updates - warmup))
    decay = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * decay


def adamw(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """A client torch AdamW, fused (one kernel over all tensors; CPU and CUDA): DeepSpeed's own Adam ops are
    JIT-compiled on first use (minutes on CPU)."""
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, fused=True)


def default_device() -> torch.device:
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def weights_dtype(cfg: LearnerConfig, device: torch.device) -> torch.dtype:
    # On CPU the weights stay fp32 even for bfloat16: DeepSpeed's bf16 engine path measured 2-10x slower
    # there than fp32, while autocast (below) gets the bf16 matmul kernels without it.
    return torch.bfloat16 if cfg.dtype == "bfloat16" and device.type == "cuda" else torch.float32


def autocast(cfg: LearnerConfig, device: torch.device):
    """bf16 compute over fp32 weights on CPU when cfg.dtype is bfloat16; a no-op otherwise."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16" and device.type == "cpu")


def _token_advantage(step_advantage: np.ndarray, step_index: np.ndarray) -> np.ndarray:
    """(T,) advantage of each token: its step's advantage on action tokens, 0 elsewhere."""
    on_action = step_index >= 0
    out = np.zeros(len(step_index), dtype=np.float32)
    out[on_action] = step_advantage[step_index[on_action]]
    return out
