"""[weight broadcast] Receive side, and the process group both sides share.

learner rank 0 -> (gloo on CPU / NCCL on GPU) -> every rollout actor -> engine.load_weights.
The group is its own TCPStore + ProcessGroup, separate from the learner's DeepSpeed world, so the
learner keeps its default group and rollout actors need no default group at all.
"""

from collections.abc import Iterator
from datetime import timedelta

import torch
import torch.distributed as dist

# One bucket: the (name, shape, dtype) of each tensor, in the order they are packed.
BucketSpec = list[tuple[str, tuple[int, ...], str]]


def weight_sync_group(address: str, port: int, rank: int, world_size: int, timeout_s: float = 300.0):
    """A process group of learner rank 0 (rank 0 here) and every rollout actor; all must call it concurrently."""
    store = dist.TCPStore(
        address, port, world_size, is_master=rank == 0, timeout=timedelta(seconds=timeout_s), wait_for_workers=False
    )
    prefix = dist.PrefixStore("freelunch-broadcast", store)
    group = dist.ProcessGroupGloo(prefix, rank, world_size, timedelta(seconds=timeout_s))
    return store, group


def broadcast_bucket(group, flat: torch.Tensor) -> None:
    options = dist.BroadcastOptions()
    options.rootRank = 0
    group.broadcast([flat], options).wait()


def receive(group, buckets: list[BucketSpec]) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) for every broadcast tensor; tensors are views into the received buckets."""
    for spec in buckets:
        dtype = getattr(torch, spec[0][2])
        flat = torch.empty(sum(_numel(shape) for _, shape, _ in spec), dtype=dtype)
        broadcast_bucket(group, flat)
        offset = 0
        for name, shape, _ in spec:
            yield name, flat[offset : offset + _numel(shape)].view(shape)
            offset += _numel(shape)


def _numel(shape: tuple[int, ...]) -> int:
    return int(torch.Size(shape).numel())
