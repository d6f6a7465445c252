"""TrajectoryBuffer: takes exactly the scheduled trajectories, drops stale ones, never hands out an id twice."""

import asyncio

import pytest

from actors.trajectory import Trajectory, from_ipc, to_ipc, to_table
from cluster.buffer import TrajectoryBuffer


def trajectory(trajectory_id: str, policy_version: int = 0, outcome: float = 0.0) -> bytes:
    t = Trajectory(
        trajectory_id=trajectory_id, task_id="t", group_id="g", policy_version=policy_version,
        tokens=[1, 2], action_mask=[False, True], step_index=[-1, 0], behavior_logp=[0.0, -1.0],
        step_rewards=[outcome], outcome=outcome, num_steps=1, finish_reason="done",
    )  # fmt: skip
    return to_ipc(to_table([t]))


def ids(data: bytes) -> list[str]:
    return from_ipc(data).column("trajectory_id").to_pylist()


def test_take_returns_exactly_the_scheduled_ids_in_the_order_asked_for():
    async def run():
        buffer = TrajectoryBuffer()
        for name in ["b0", "a1", "next0", "a0"]:  # "next0" belongs to the iteration running ahead
            await buffer.put(trajectory(name))
        batch, dropped = await buffer.take(["a0", "a1", "b0"], min_version=0)
        return ids(batch), dropped, buffer.depth()

    assert asyncio.run(run()) == (["a0", "a1", "b0"], 0, 1)  # not arrival order: b0, a1, a0


def test_take_drops_trajectories_older_than_max_staleness():
    async def run():
        buffer = TrajectoryBuffer()
        for name, version in [("old", 3), ("bound", 4), ("new", 5)]:
            await buffer.put(trajectory(name, policy_version=version))
        batch, dropped = await buffer.take(["old", "bound", "new"], min_version=4)
        return ids(batch), from_ipc(batch).column("policy_version").to_pylist(), dropped

    assert asyncio.run(run()) == (["bound", "new"], [4, 5], 1)


def test_an_id_is_accepted_once_even_after_it_was_taken():
    async def run():
        buffer = TrajectoryBuffer()
        await buffer.put(trajectory("x", outcome=1.0))
        await buffer.put(trajectory("x", outcome=0.0))  # a replaced actor's re-run of the same work
        first, _ = await buffer.take(["x"], min_version=0)
        await buffer.put(trajectory("x", outcome=0.0))
        return from_ipc(first).column("outcome").to_pylist(), buffer.depth(), await buffer.missing(["x"], 0.0)

    assert asyncio.run(run()) == ([1.0], 0, [])


def test_missing_waits_for_arrivals_and_reports_the_rest():
    async def run():
        buffer = TrajectoryBuffer()
        waiting = asyncio.create_task(buffer.missing(["a", "b"], wait_s=5.0))
        await asyncio.sleep(0.01)
        await buffer.put(trajectory("a"))
        await buffer.put(trajectory("b"))
        complete = await waiting
        partial = await buffer.missing(["a", "c"], wait_s=0.05)
        return complete, partial

    assert asyncio.run(run()) == ([], ["c"])


def test_take_of_an_id_that_never_arrived_is_an_error():
    async def run():
        buffer = TrajectoryBuffer()
        await buffer.put(trajectory("a"))
        await buffer.take(["a", "zz"], min_version=0)

    with pytest.raises(KeyError, match="zz"):
        asyncio.run(run())
