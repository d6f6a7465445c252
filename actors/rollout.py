"""[rollout] RolloutActor: one engine and many concurrent agent loops.

env -> agent loop -> [rollout actor] -> buffer. Every agent loop of a `collect` call runs concurrently
against the one engine (vLLM batches their requests); each finished trajectory is stamped with the
policy version and handed to `sink` as one Arrow IPC table at once, not at the end of the batch.
Each agent loop plays its env in a child process from the actor's EnvPool (envs/process.py), so an env
that crashes or hangs ends only its own trajectory.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from actors.agent_loop import run_agent
from actors.broadcast import BucketSpec, receive, weight_sync_group
from actors.config import ActorConfig
from actors.engine import VLLMEngine
from actors.trajectory import to_ipc, to_table
from envs import Task
from envs.config import EnvConfig
from envs.process import EnvPool


@dataclass(frozen=True)
class Work:
    """One trajectory to play: the task, its group, and the seed of the env's luck."""

    task: Task
    group_id: str
    trajectory_id: str
    env_seed: int


class RolloutActor:
    def __init__(
        self, actors: ActorConfig, env: EnvConfig, *, model_dir: str, seed: int, sink: Callable[[bytes], None]
    ):
        from transformers import AutoTokenizer

        self.engine = VLLMEngine(
            model_dir,
            dtype=actors.dtype,
            seed=seed,
            max_model_len=actors.max_trajectory_tokens,
            kv_cache_gb=actors.kv_cache_gb,
            tensor_parallel_size=actors.tensor_parallel_size,
            enforce_eager=actors.enforce_eager,
            lockstep=actors.deterministic,
        )
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.actors, self.env, self.sink, self.seed = actors, env, sink, seed
        self._broadcast_group = None
        self.policy_version = 0  # of the weights the engine serves
        self.envs = EnvPool(
            step_timeout_s=env.step_timeout_s, reset_timeout_s=env.reset_timeout_s, max_processes=env.max_env_processes
        )
        self._receive_buffers: list = []  # reused by every broadcast: no fresh pages to fault in

    async def collect(self, work: list[Work]) -> int:
        """Play every trajectory of `work` concurrently; returns how many reached the sink. Collects may
        overlap (rollouts running ahead of the learner) and weights may arrive meanwhile."""
        # Seeded per policy version, so a resumed on-policy run samples exactly what an uninterrupted one would.
        self.engine.reseed(self.seed * 100_003 + self.policy_version)
        self.engine.expect(item.trajectory_id for item in work)
        return sum(await asyncio.gather(*(self._play(item) for item in work)))

    async def ping(self) -> int:
        """Answered between two engine steps: a stuck engine or process leaves it unanswered."""
        return self.policy_version

    async def _play(self, item: Work) -> int:
        policy_version = self.policy_version  # a broadcast during the trajectory makes it newer, never staler
        key = item.trajectory_id
        try:
            if self.envs.full():  # a process frees up only when other trajectories end: no lockstep wait on it
                self.engine.park(key)
            async with self.envs.env() as env:
                self.engine.unpark(key)
                trajectory = await self._run(env, item)
        finally:
            self.engine.leave(key)
        trajectory.policy_version = policy_version
        self.sink(to_ipc(to_table([trajectory])))
        return 1

    async def _run(self, env, item: Work):
        env.make(self.env.name, item.env_seed, self.env.make_env_kwargs())
        return await run_agent(
            env,
            item.task,
            self.engine.seat(item.trajectory_id),
            self.tokenizer,
            trajectory_id=item.trajectory_id,
            group_id=item.group_id,
            max_steps=self.env.max_steps,
            max_tokens=self.actors.max_tokens,
            max_trajectory_tokens=self.actors.max_trajectory_tokens,
            temperature=self.actors.temperature,
        )

    async def stats(self) -> dict[str, float]:
        """Counters since the actor started: env processes replaced after a crash, hang or env exception, tokens
        sampled and seconds of engine steps."""
        return {
            "env_restarts": self.envs.restarts,
            "sampled_tokens": self.engine.sampled_tokens,
            "step_s": self.engine.step_s,
        }

    async def close(self) -> None:
        """Stop every env process of this actor (they also exit by themselves when the actor process dies)."""
        await self.envs.close()

    # --- plumbing ---
    async def connect_learner(self, address: str, port: int, rank: int, world_size: int) -> None:
        """Join the broadcast group (learner rank 0 is its rank 0)."""
        self._broadcast_group = weight_sync_group(address, port, rank, world_size)

    async def receive_weights(self, buckets: list[BucketSpec], policy_version: int) -> None:
        """Receive one broadcast (the learner sends concurrently) and serve it from the next action on."""
        # The transfer runs in a thread, so agent loops keep generating; the group is drained fully
        # before loading, so every one of the sender's broadcasts is matched even if a name were skipped.
        weights = await asyncio.to_thread(receive, self._broadcast_group[1], buckets, self._receive_buffers)
        await self.engine.load_weights_between_actions(weights)
        self.policy_version = policy_version
