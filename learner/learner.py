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
from learner.logp import microbatches, pad, token_logp
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
    ):
        self.cfg, self.model_dir, self.temperature = cfg, model_dir, temperature
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self._broadcast_group = None
        self._send_buffers: list = []

    def setup(self, address: str, port: int) -> None:
        """Join the learner world (all ranks concurrently, rendezvous at rank 0's address:port); build the policy."""
        import deepspeed
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.manual_seed(self.seed + self.rank)
        init_distributed(self.rank, self.world_size, address, port)
        self.device = default_device()
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=weights_dtype(self.cfg, self.device))
        model.to(self.device)
        # A client torch AdamW: DeepSpeed's own Adam ops are JIT-compiled on first use (minutes on CPU).
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.cfg.lr, weight_decay=0.0)
        self.engine, *_ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=deepspeed_config(self.cfg, self.world_size, self.device)
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
        rows = list(range(self.rank, table.num_rows, self.world_size))
        totals: dict[str, float] = defaultdict(float)
        self.engine.train()
        for microbatch in microbatches([len(columns["tokens"][i]) for i in rows], self.cfg.microbatch_size):
            metrics = self._backward([rows[i] for i in microbatch], columns, num_tokens)
            for key, value in metrics.items():
                totals[key] += value * (1.0 if key == "tokens" else metrics["tokens"])
            self.engine.step()  # DeepSpeed updates only at the accumulation boundary (the last microbatch)
        tokens = max(totals.pop("tokens"), 1.0)
        result = {key: value / tokens for key, value in totals.items()}
        result["tokens"] = tokens
        result["loss/grad_norm"] = float(self.engine.get_global_grad_norm() or 0.0)
        return result

    def _backward(self, rows: list[int], columns: dict, num_tokens: float) -> dict[str, float]:
        input_ids, attention_mask = pad([columns["tokens"][i] for i in rows], self.tokenizer.pad_token_id or 0)
        per_token = {
            "action_mask": padded([columns["action_mask"][i] for i in rows], input_ids.shape, torch.bool),
            "behavior_logp": padded([columns["behavior_logp"][i] for i in rows], input_ids.shape, torch.float32),
            "ref_logp": padded([columns["ref_logp"][i] for i in rows], input_ids.shape, torch.float32),
            # each action token carries its step's advantage (step_index -1 off actions)
            "advantage": padded(
                [_token_advantage(columns["step_advantage"][i], columns["step_index"][i]) for i in rows],
                input_ids.shape,
                torch.float32,
            ),
        }
        per_token = {key: value.to(self.device) for key, value in per_token.items()}
        with autocast(self.cfg, self.device):
            policy_logp = token_logp(
                self.engine.module,
                input_ids.to(self.device),
                attention_mask.to(self.device),
                temperature=self.temperature,
                chunk_size=self.cfg.logp_chunk_size,
            )
        loss, metrics = policy_loss(
            policy_logp,
            per_token["behavior_logp"],
            per_token["ref_logp"],
            per_token["advantage"],
            per_token["action_mask"],
            max_importance_ratio=self.cfg.max_importance_ratio,
            kl_coef=self.cfg.kl_coef,
            kl_estimator=self.cfg.kl_estimator,
            num_tokens=num_tokens,
        )
        self._stop_if_not_finite(loss)
        # --- plumbing ---
        # The loss is already a token mean over the whole batch; DeepSpeed would divide it again by the
        # accumulation steps, and it averages gradients over ranks, so undo both.
        self.engine.backward(loss * self.world_size, scale_wrt_gas=False)
        return metrics

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
    """DeepSpeed's JSON config, generated from LearnerConfig (never a second file to keep in sync)."""
    per_rank = cfg.batch_size // world_size
    return {
        "train_micro_batch_size_per_gpu": cfg.microbatch_size,
        "gradient_accumulation_steps": math.ceil(per_rank / cfg.microbatch_size),
        "train_batch_size": cfg.microbatch_size * math.ceil(per_rank / cfg.microbatch_size) * world_size,
        "zero_optimization": {"stage": cfg.zero_stage},
        "gradient_clipping": cfg.max_grad_norm,
        "bf16": {"enabled": weights_dtype(cfg, device) == torch.bfloat16},
        "steps_per_print": 2**31 - 1,
    }


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


def padded(rows: list[np.ndarray], shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """(B, T) right-padded with zeros (False)."""
    out = torch.zeros(shape, dtype=dtype)
    for b, row in enumerate(rows):
        out[b, : len(row)] = torch.tensor(np.asarray(row), dtype=dtype)  # copies: Arrow memory is read-only
    return out
