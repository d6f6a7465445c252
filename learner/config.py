"""LearnerConfig: the policy model, the scorer, the advantage and the update."""

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class LearnerConfig:
    model: str = "smollm2-135m-instruct"
    """Policy and reference: a built-in name (smollm2-135m-instruct, tiny-random) or an HF directory."""
    num_learners: int = 1
    """DeepSpeed ranks of the learner role (data parallel)."""
    dtype: Literal["float32", "bfloat16"] = "bfloat16"
    """Compute dtype of learner and scorer. On CPU bfloat16 autocasts over fp32 weights and optimizer
    (bf16 matmul kernels: forward+backward of SmolLM2-135M measured 2.8x faster than fp32); float32 is exact."""
    zero_stage: int = 2
    """DeepSpeed ZeRO stage (0-3) of the learner ranks; a world of one (one learner rank, the scorer's PRM) has
    nothing to partition and runs stage 0."""
    batch_size: int = 16
    """Trajectories per iteration; a multiple of group_size and of num_learners."""
    group_size: int = 4
    """Trajectories per task; the outcome advantage is normalised within each group."""
    microbatch_tokens: int = 4096
    """Token budget of one forward/backward: whole groups are packed into one row, each shared prompt once
    (learner/README.md, decision 12), up to this many tokens (a longer group or trajectory gets its own)."""
    lr: float = 2e-5
    """AdamW learning rate of the policy (the peak, under a schedule)."""
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    """How the rate moves over the run's num_iterations updates after the warmup: held at lr, or decayed
    linearly or along a half cosine to lr_min_ratio * lr."""
    lr_warmup_iterations: int = 0
    """Updates over which the rate rises linearly to lr (the first update uses lr / lr_warmup_iterations)."""
    lr_min_ratio: float = 0.0
    """The rate a linear or cosine schedule ends at, as a share of lr."""
    max_grad_norm: float = 1.0
    """Gradient clipping threshold."""
    max_staleness: int = 0
    """How many policy versions a trajectory may lag the learner when its batch is taken. 0 = on-policy:
    rollouts wait for each broadcast (the default: on one machine every role shares the cores, and overlapping
    them measured slower). 1 = the next iteration's rollouts run while this one scores and updates (and a
    broadcast lands between two actions), what pays on a cluster where rollouts have GPUs of their own; older
    trajectories are dropped and counted."""
    max_importance_ratio: float = 2.0
    """Truncation of the per-token importance weight pi_theta / pi_behavior that corrects for staleness
    and engine numerics (truncated IS); 1.0 never up-weights a token."""
    kl_coef: float = 0.01
    """Weight of the KL-to-reference loss term."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    """KL estimator on action tokens (Schulman's k1/k2/k3); k3 is unbiased and always >= 0."""
    scorer: Literal["implicit_prm", "frozen", "lagged", "none"] = "implicit_prm"
    """Progress-advantage scorer (PAPER.md 8.4): implicit_prm = an online implicit PRM trained from outcomes
    (PRIME-style); frozen = a fixed (scorer_policy, scorer_ref) pair of directories; lagged = our own policy
    of scorer_lag versions ago against the reference; none = outcome-only GRPO. Never the current policy's
    own ratio: that only cancels the KL."""
    scorer_policy: str = ""
    """frozen: the numerator model directory, e.g. an RL-trained checkpoint; same tokenizer as the policy."""
    scorer_ref: str = ""
    """frozen: the denominator model directory; "" = the run's reference (no extra forward pass)."""
    scorer_lag: int = 8
    """lagged: how many policy versions behind the numerator is. Small lags approach the policy's own
    ratio, whose reward only cancels the KL penalty; the first scorer_lag iterations score 0."""
    beta: float = 0.05
    """beta of the scorer: progress_adv = beta * sum over the step's action tokens of (logp_scorer - logp_ref)."""
    failure_gating: bool = False
    """For a trajectory with a negative outcome advantage, apply that advantage only from the step where the
    cumulative progress advantage is lowest (the predicted failure step) on: the good prefix is spared."""
    prm_lr: float = 1e-5
    """AdamW learning rate of the implicit PRM."""
    progress_coef: float = 0.5
    """lambda: weight of the group-centred, clipped progress advantage added to the outcome advantage."""
    progress_clip: float = 2.0
    """Clip of the normalised progress advantage before it is weighted."""
    logp_chunk_size: int = 1024
    """Tokens per chunk when gathering log-probs (bounds the logits held at once)."""
    num_cpus: float = 1.0
    """CPUs reserved for each learner rank and for the scorer."""
    num_gpus: float = 0.0
    """GPUs reserved for each learner rank and for the scorer (0 on CPU machines)."""
