"""[ref scoring] Scorer: the frozen reference and the progress-advantage scorer, on resources of their own.

rollout -> [scorer] -> advantage -> learner. For every trajectory it adds `ref_logp` (per token, for the
KL term) and `progress_adv` (per step): beta * log pi_s/pi_ref_s summed over a step's action tokens,
read as that step's advantage (PAPER.md 2.4, 8.4). The numerator pi_s is, by `learner.scorer`: an online
implicit PRM (PRIME, PAPER.md 8.2) initialised from the reference and trained from outcomes (default);
a frozen checkpoint pair; or our own policy `scorer_lag` versions ago (it then joins the broadcast).
It is never the current policy: that ratio is the k1 KL estimate and only cancels the KL penalty.
"""

from collections import deque

import numpy as np
import torch
import torch.nn.functional as F

from actors.broadcast import BucketSpec, receive, weight_sync_group
from actors.trajectory import from_ipc, ragged, to_ipc, with_columns
from learner.advantage import progress_advantage, step_sums
from learner.config import LearnerConfig
from learner.learner import (
    adamw,
    autocast,
    deepspeed_config,
    default_device,
    free_port,
    init_distributed,
    weights_dtype,
)
from learner.logp import load_model, pack, packed_logp, plan, sequence_logp


class Scorer:
    def __init__(self, cfg: LearnerConfig, *, model_dir: str, temperature: float, seed: int):
        import deepspeed

        torch.manual_seed(seed)
        init_distributed(0, 1, "127.0.0.1", free_port())  # a world of one: DeepSpeed needs a process group
        self.device = default_device()
        dtype = weights_dtype(cfg, self.device)
        self.ref = _frozen(model_dir, cfg, self.device)
        self.prm = self.numerator = self.denominator = None
        if cfg.scorer == "implicit_prm":
            # Same weights, dtype and code path as the reference, so numerical error cancels in the ratio.
            prm = load_model(model_dir, dtype=dtype, device=self.device)
            optimizer = adamw(prm, cfg.prm_lr)
            config = deepspeed_config(cfg, 1, self.device)  # the PRM trains in a world of its own
            self.prm, *_ = deepspeed.initialize(model=prm, optimizer=optimizer, config=config)
        elif cfg.scorer == "frozen":
            for other in filter(None, (cfg.scorer_policy, cfg.scorer_ref)):
                _check_same_tokenizer(model_dir, other)
            self.numerator = _frozen(cfg.scorer_policy, cfg, self.device)
            self.denominator = _frozen(cfg.scorer_ref, cfg, self.device) if cfg.scorer_ref else None
        elif cfg.scorer == "lagged":
            self.numerator = _frozen(model_dir, cfg, self.device)  # version 0 is the reference itself
            self._versions: deque = deque()
            self._version = 0  # the policy version last received
        self.cfg, self.temperature = cfg, temperature
        self._broadcast_group = None

    # --- algorithm ---
    def score(self, batch: bytes) -> tuple[bytes, dict[str, float]]:
        """Add ref_logp and progress_adv to the batch, then train the implicit PRM on its outcomes.

        Every log-prob is taken on action tokens only (ref_logp is 0 elsewhere): the KL term and the progress
        advantage use nothing else. The scores come from the forward pass of the PRM's own update, before its
        optimizer step: one pass instead of two, and the live AUROC measures the scorer on trajectories it
        was not yet trained on.
        """
        table = from_ipc(batch)
        tokens, masks = ragged(table, "tokens"), ragged(table, "action_mask")
        step_index, num_steps = ragged(table, "step_index"), table.column("num_steps").to_numpy()
        groups = table.column("group_id").to_pylist()
        ref_logp = self._logp(self.ref, tokens, masks, groups)
        metrics: dict[str, float] = {}
        if self.prm is not None:
            outcome = np.clip(table.column("outcome").to_numpy().astype(np.float32), 0.0, 1.0)
            scorer_logp, metrics["score/prm_loss"] = self._train_prm(tokens, masks, groups, ref_logp, outcome)
            base_logp = ref_logp
        elif self.numerator is not None:
            scorer_logp = self._logp(self.numerator, tokens, masks, groups)
            base_logp = ref_logp if self.denominator is None else self._logp(self.denominator, tokens, masks, groups)
        else:
            scorer_logp = base_logp = ref_logp  # scorer "none": a progress advantage of exactly 0
        logratio = [
            step_sums(np.where(mask, s - b, 0.0), index, int(n))
            for s, b, mask, index, n in zip(scorer_logp, base_logp, masks, step_index, num_steps)
        ]
        progress = progress_advantage(logratio, self.cfg.beta)
        scored = with_columns(table, ref_logp=ref_logp, progress_adv=[p.astype(np.float32) for p in progress])
        return to_ipc(scored), metrics

    def _train_prm(self, tokens, masks, groups, ref_logp, outcome: np.ndarray) -> tuple[list[np.ndarray], float]:
        """One update of pi_phi: the outcome is predicted by sigmoid(beta * sum of action-token log-ratios).

        Returns the (T,) log-probs of pi_phi before the update (0 off actions), and the loss.
        """
        self.prm.train()
        total, before = 0.0, [np.zeros(len(t), np.float32) for t in tokens]
        with autocast(self.cfg, self.device):  # one region: the weights' bf16 copies are cast once per update
            for rows in plan(tokens, self.cfg.microbatch_tokens, groups):
                total += self._prm_backward(rows, tokens, masks, ref_logp, outcome, before)
        self.prm.step()  # the one accumulation boundary: every forward above saw the PRM before this update
        return before, total

    def _prm_backward(self, rows, tokens, masks, ref_logp, outcome, before: list[np.ndarray]) -> float:
        """Forward and backward of one packed microbatch of the PRM loss; fills `before` with its log-probs."""
        packed = pack([tokens[i] for i in rows], [masks[i] for i in rows])
        logp = packed_logp(self.prm.module, packed, temperature=self.temperature, chunk_size=self.cfg.logp_chunk_size)
        ref = torch.from_numpy(packed.on_scored([ref_logp[i] for i in rows]))
        sequence = torch.from_numpy(np.repeat(np.arange(len(rows)), [len(p) for p in packed.positions]))
        logratio = logp[packed.order().to(self.device)] - ref.to(self.device)  # (M,) on the microbatch's actions
        reward = self.cfg.beta * torch.zeros(len(rows), device=self.device).index_add(
            0, sequence.to(self.device), logratio
        )  # (B,)
        target = torch.as_tensor(outcome[rows], device=self.device)
        loss = F.binary_cross_entropy_with_logits(reward, target, reduction="sum") / len(tokens)
        self.prm.backward(loss, scale_wrt_gas=False)
        packed.spread(logp.detach().float().cpu().numpy(), [before[i] for i in rows])
        return loss.item()

    # --- plumbing ---
    def _logp(self, model, tokens: list[np.ndarray], masks: list[np.ndarray], groups: list) -> list[np.ndarray]:
        """(T,) float32 log-probs of each trajectory's action tokens (0 elsewhere), packed per group."""
        with autocast(self.cfg, self.device):
            return sequence_logp(
                model,
                tokens,
                scored=masks,
                groups=groups,
                temperature=self.temperature,
                max_tokens=self.cfg.microbatch_tokens,
                chunk_size=self.cfg.logp_chunk_size,
            )

    def save_checkpoint(self, path: str) -> None:
        """The trained implicit PRM with its optimizer (the other scorers hold no state of their own)."""
        if self.prm is not None:
            self.prm.save_checkpoint(path, tag="scorer")

    def load_checkpoint(self, path: str) -> None:
        if self.prm is not None and self.prm.load_checkpoint(path, tag="scorer")[0] is None:
            raise FileNotFoundError(f"no scorer checkpoint in {path}")

    def connect_learner(self, address: str, port: int, rank: int, world_size: int) -> None:
        """Join the broadcast group (lagged scorer only): the policy's versions arrive like an engine's."""
        self._broadcast_group = weight_sync_group(address, port, rank, world_size)

    def receive_weights(self, buckets: list[BucketSpec], policy_version: int) -> None:
        """Keep the broadcast version; the numerator becomes the policy of scorer_lag versions ago. A version
        broadcast again (to a replaced rollout actor) is received and not kept twice."""
        weights = dict(receive(self._broadcast_group[1], buckets))
        if policy_version == self._version:
            return
        self._version = policy_version
        self._versions.append(weights)
        if len(self._versions) > self.cfg.scorer_lag:
            self.numerator.load_state_dict(self._versions.popleft(), strict=False)


def _frozen(model_dir: str, cfg: LearnerConfig, device: torch.device):
    model = load_model(model_dir, dtype=weights_dtype(cfg, device), device=device).eval()  # or refuse it
    if cfg.dtype == "bfloat16" and device.type == "cpu":
        # Autocast would cast these weights to bf16 on every forward (a frozen weight's cast is not cached); the
        # cast done once gives the same values, so the ratio to the PRM, which is cast by autocast, is unchanged.
        head = model.get_output_embeddings()  # often tied to the input embedding, which stays fp32
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module is not head:
                module.to(torch.bfloat16)
    return model.requires_grad_(False)


def _check_same_tokenizer(model_dir: str, other: str) -> None:
    """Both ratios are taken on the policy's token ids, so the scorer pair must share its vocabulary."""
    from transformers import AutoTokenizer

    if AutoTokenizer.from_pretrained(model_dir).get_vocab() != AutoTokenizer.from_pretrained(other).get_vocab():
        raise ValueError(f"scorer model {other} has a different tokenizer from the policy {model_dir}")
