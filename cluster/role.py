"""[plumbing] Roles: N Ray actors of one class on one placement group, and every Ray call of the run.

launch(cfg) builds the four roles (buffer, rollout, scorer, learner), each on its own placement group,
names the actors `<role>-<i>` in the namespace `freelunch`, and wires the broadcast group. The driver
loop (cluster/train.py) then calls `Roles` methods that take and return plain data (Arrow IPC bytes,
dicts of floats); `ray.get` always carries the config's timeout.
"""

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass

import ray
from ray.util.placement_group import remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from actors.rollout import RolloutActor, Work
from cluster.buffer import BufferSink, TrajectoryBuffer
from cluster.config import Config
from cluster.placement import node_address, reserve
from learner.learner import Learner
from learner.scorer import Scorer

NAMESPACE = "freelunch"


class Role:
    def __init__(
        self,
        name: str,
        cls: type,
        count: int,
        *,
        cpus: float,
        gpus: float,
        threads: int,
        timeout_s: float,
        kwargs_for_rank,
    ):
        self.name, self.timeout_s = name, timeout_s
        self.group = reserve(name, {"CPU": cpus, "GPU": gpus}, count)
        env_vars = actor_env(threads, gpus)
        self.actors = [
            ray.remote(cls)
            .options(
                name=f"{name}-{rank}",
                namespace=NAMESPACE,
                num_cpus=cpus,
                num_gpus=gpus,
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.group, placement_group_bundle_index=rank),
                runtime_env={"env_vars": env_vars},
            )
            .remote(**kwargs_for_rank(rank))
            for rank in range(count)
        ]

    def submit(self, method: str, *args, **kwargs) -> list:
        return [getattr(actor, method).remote(*args, **kwargs) for actor in self.actors]

    def submit_each(self, method: str, args_per_actor: list[tuple]) -> list:
        return [getattr(actor, method).remote(*args) for actor, args in zip(self.actors, args_per_actor)]

    def get(self, refs):
        try:
            return ray.get(refs, timeout=self.timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise TimeoutError(f"role {self.name!r} did not answer within cluster.timeout_s={self.timeout_s}") from None

    def call(self, method: str, *args, **kwargs) -> list:
        return self.get(self.submit(method, *args, **kwargs))

    def stop(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        remove_placement_group(self.group)


@dataclass
class Roles:
    """What the driver loop sees: collect, score, update, broadcast, save_policy."""

    buffer: object
    rollout: Role
    scorer: Role
    learner: Role
    buckets: list
    timeout_s: float
    lagged_scorer: bool

    def collect(self, work: list[Work], policy_version: int) -> bytes:
        shares = [work[i :: len(self.rollout.actors)] for i in range(len(self.rollout.actors))]
        played = self.rollout.submit_each("collect", [(share, policy_version) for share in shares])
        batch = self.rollout.get(self.buffer.take.remote(len(work)))
        self.rollout.get(played)
        return batch

    def score(self, batch: bytes) -> tuple[bytes, dict[str, float]]:
        return self.scorer.call("score", batch)[0]

    def update(self, batch: bytes) -> dict[str, float]:
        per_rank = self.learner.call("update", batch)
        tokens = sum(metrics["tokens"] for metrics in per_rank)
        return {
            key: sum(m[key] * m["tokens"] for m in per_rank) / max(tokens, 1.0)
            for key in per_rank[0]
            if key not in ("tokens", "loss/grad_norm")
        } | {"loss/grad_norm": per_rank[0]["loss/grad_norm"]}

    def broadcast(self) -> int:
        """Learner rank 0 -> every engine (and a lagged scorer); returns the bytes sent."""
        receivers = self.receivers()
        received = [receiver.receive_weights.remote(self.buckets) for receiver in receivers]
        sent = self.learner.call("broadcast")
        self.rollout.get(received)
        return sent[0]

    def receivers(self) -> list:
        """Ranks 1.. of the broadcast group, in order."""
        return self.rollout.actors + (self.scorer.actors if self.lagged_scorer else [])

    def save_policy(self, path: str) -> None:
        self.learner.call("save_policy", path)

    def save_checkpoint(self, path: str) -> None:
        """Learner (every rank) and scorer state into path."""
        refs = self.learner.submit("save_checkpoint", path) + self.scorer.submit("save_checkpoint", path)
        self.learner.get(refs)

    def load_checkpoint(self, path: str) -> None:
        """Restore learner and scorer from path, then give every engine the restored policy."""
        self.learner.get(self.learner.submit("load_checkpoint", path) + self.scorer.submit("load_checkpoint", path))
        self.broadcast()

    def buffer_depth(self) -> int:
        return ray.get(self.buffer.depth.remote(), timeout=self.timeout_s)


@contextmanager
def launch(cfg: Config, model_dir: str):
    """Start every role, connect the learner world and the broadcast group; stop them all on exit."""
    timeout = cfg.cluster.timeout_s
    cores = os.cpu_count() or 1
    started: list[Role] = []
    buffer = ray.remote(TrajectoryBuffer).options(name="buffer", namespace=NAMESPACE, num_cpus=0).remote()
    try:
        a, lc = cfg.actors, cfg.learner
        rollout = Role(
            "rollout",
            RolloutActor,
            a.num_rollout_actors,
            cpus=a.num_cpus,
            gpus=a.num_gpus,
            threads=max(1, cores // a.num_rollout_actors),
            timeout_s=timeout,
            kwargs_for_rank=lambda rank: dict(
                actors=a, env=cfg.env, model_dir=model_dir, seed=cfg.seed + rank, sink=BufferSink(buffer)
            ),
        )
        started.append(rollout)
        scorer = Role(
            "scorer",
            Scorer,
            1,
            cpus=lc.num_cpus,
            gpus=lc.num_gpus,
            threads=cores,
            timeout_s=timeout,
            kwargs_for_rank=lambda rank: dict(cfg=lc, model_dir=model_dir, temperature=a.temperature, seed=cfg.seed),
        )
        started.append(scorer)
        learner = Role(
            "learner",
            Learner,
            lc.num_learners,
            cpus=lc.num_cpus,
            gpus=lc.num_gpus,
            threads=max(1, cores // lc.num_learners),
            timeout_s=timeout,
            kwargs_for_rank=lambda rank: dict(
                cfg=lc,
                model_dir=model_dir,
                temperature=a.temperature,
                rank=rank,
                world_size=lc.num_learners,
                seed=cfg.seed,
            ),
        )
        started.append(learner)
        address = node_address(learner.group)
        port = learner.get(learner.actors[0].free_port.remote())
        learner.call("setup", address, port)
        buckets = learner.get(learner.actors[0].weight_buckets.remote())
        roles = Roles(buffer, rollout, scorer, learner, buckets, timeout, lagged_scorer=lc.scorer == "lagged")
        receivers = roles.receivers()
        world = 1 + len(receivers)
        port = learner.get(learner.actors[0].free_port.remote())
        joined = [actor.connect_learner.remote(address, port, 1 + i, world) for i, actor in enumerate(receivers)]
        learner.get(learner.actors[0].connect_rollout.remote(address, port, world))
        rollout.get(joined)
        scorer.get(scorer.submit("__ray_ready__"))
        yield roles
    finally:
        for role in reversed(started):
            role.stop()
        ray.kill(buffer)


def actor_env(threads: int, gpus: float) -> dict[str, str]:
    """Environment of every role's actors: offline models, loopback, the thread budget of the role."""
    env = {
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": str(max(1, math.floor(threads))),
        # keep the driver's progress lines readable; a user's own levels win
        "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
        "TRANSFORMERS_VERBOSITY": os.environ.get("TRANSFORMERS_VERBOSITY", "error"),
    }
    if gpus == 0:
        env["DS_ACCELERATOR"] = "cpu"
    return env
