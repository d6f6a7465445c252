"""[weight broadcast] Receive side, and the process group both sides share.

learner rank 0 -> (gloo on CPU / NCCL on GPU) -> every rollout actor -> engine.load_weights.
The group is its own TCPStore + ProcessGroup, separate from the learner's DeepSpeed world, so the
learner keeps its default group and rollout actors need no default group at all.
"""

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


def start_broadcast(group, flat: torch.Tensor):
    """Start broadcasting `flat` from rank 0 (in place on the other ranks); returns the work to wait on."""
    options = dist.BroadcastOptions()
    options.rootRank = 0
    return group.broadcast([flat], options)


def receive(group, buckets: list[BucketSpec], buffers: list[torch.Tensor] | None = None):
    """(name, tensor) of every broadcast tensor, as views into the received buckets.

    All buckets are posted at once (gloo runs them in order). `buffers`, if given, is the caller's
    list of bucket buffers: filled on the first call and reused after, so later broadcasts land in
    memory that is already mapped; the views are then only valid until the next call.
    """
    if buffers is not None and len(buffers) == len(buckets):
        flats = buffers
    else:
        flats = [torch.empty(sum(_numel(s) for _, s, _ in spec), dtype=getattr(torch, spec[0][2])) for spec in buckets]
        if buffers is not None:
            buffers[:] = flats
    works = [start_broadcast(group, flat) for flat in flats]
    named = []
    for spec, flat, work in zip(buckets, flats, works):
        work.wait()
        offset = 0
        for name, shape, _ in spec:
            named.append((name, flat[offset : offset + _numel(shape)].view(shape)))
            offset += _numel(shape)
    return named


def _numel(shape: tuple[int, ...]) -> int:
    return int(torch.Size(shape).numel())
