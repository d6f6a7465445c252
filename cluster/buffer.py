"""[buffer] TrajectoryBuffer: where rollout actors put finished trajectories and the driver takes batches.

rollout actor -> [buffer] -> scorer. Trajectories arrive one Arrow IPC table at a time, as each ends, and
are keyed by trajectory_id: the driver takes exactly the trajectories it scheduled for an iteration, even
while the next iteration's rollouts already arrive (max_staleness > 0). An id is accepted once: when a
replaced rollout actor re-runs work whose first attempt did arrive, the copy is dropped, so no
trajectory_id reaches the learner or the run's Parquet twice.
"""

import asyncio

import pyarrow as pa

from actors.trajectory import concat, from_ipc, to_ipc


class TrajectoryBuffer:
    def __init__(self):
        self._waiting: dict[str, pa.Table] = {}  # trajectory_id -> its one-row table, in arrival order
        self._seen: set[str] = set()
        self._arrived = asyncio.Condition()

    async def put(self, data: bytes) -> None:
        table = from_ipc(data)
        async with self._arrived:
            for row, trajectory_id in enumerate(table.column("trajectory_id").to_pylist()):
                if trajectory_id not in self._seen:
                    self._seen.add(trajectory_id)
                    self._waiting[trajectory_id] = table.slice(row, 1)
            self._arrived.notify_all()

    async def missing(self, trajectory_ids: list[str], wait_s: float) -> list[str]:
        """The ids that never arrived (taken ones did), after waiting up to wait_s for all of them."""

        def absent() -> list[str]:
            return [i for i in trajectory_ids if i not in self._seen]

        async with self._arrived:
            try:
                await asyncio.wait_for(self._arrived.wait_for(lambda: not absent()), wait_s)
            except TimeoutError:
                pass
            return absent()

    async def take(self, trajectory_ids: list[str], min_version: int) -> tuple[bytes, int]:
        """Remove the given (arrived) trajectories; returns those with policy_version >= min_version as one
        Arrow IPC table in the order asked for, and how many were dropped as too stale. The order asked for, not
        the order of arrival: scoring and learning then add up the same numbers in the same order in a run and
        in its resume."""
        async with self._arrived:
            if unknown := set(trajectory_ids) - self._waiting.keys():
                raise KeyError(f"take: {len(unknown)} trajectories have not arrived, e.g. {sorted(unknown)[0]!r}")
            tables = [self._waiting.pop(i) for i in dict.fromkeys(trajectory_ids)]
            fresh = [t for t in tables if t.column("policy_version")[0].as_py() >= min_version]
            return to_ipc(concat(fresh) if fresh else tables[0].slice(0, 0)), len(tables) - len(fresh)

    def depth(self) -> int:
        """Trajectories that arrived and are not taken yet (the rollouts running ahead of the learner)."""
        return len(self._waiting)


class BufferSink:
    """The `sink` a rollout actor is given: puts each trajectory into the buffer without waiting."""

    def __init__(self, buffer):
        self.buffer = buffer

    def __call__(self, data: bytes) -> None:
        self.buffer.put.remote(data)
