"""[buffer] TrajectoryBuffer: where rollout actors put finished trajectories and the driver takes batches.

rollout actor -> [buffer] -> scorer. Trajectories arrive one Arrow IPC table at a time, as each ends;
`take(n)` waits until n have arrived and hands them over in arrival order as one table.
"""

import asyncio

from actors.trajectory import concat, from_ipc, to_ipc


class TrajectoryBuffer:
    def __init__(self):
        self._tables: list = []
        self._arrived = asyncio.Condition()

    async def put(self, data: bytes) -> None:
        async with self._arrived:
            self._tables.append(from_ipc(data))
            self._arrived.notify_all()

    async def take(self, n: int) -> bytes:
        """The first n trajectories to arrive, as one Arrow IPC table (waits until there are n)."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: sum(t.num_rows for t in self._tables) >= n)
            table = concat(self._tables)
            self._tables = [table.slice(n)] if table.num_rows > n else []
            return to_ipc(table.slice(0, n))

    def depth(self) -> int:
        """Trajectories waiting to be taken."""
        return sum(t.num_rows for t in self._tables)


class BufferSink:
    """The `sink` a rollout actor is given: puts each trajectory into the buffer without waiting."""

    def __init__(self, buffer):
        self.buffer = buffer

    def __call__(self, data: bytes) -> None:
        self.buffer.put.remote(data)
