"""[weight broadcast] Receive side, and the process group both sides share.

learner rank 0 -> (gloo on CPU / NCCL on GPU) -> every rollout actor -> engine.load_weights.
The group is its own TCPStore + ProcessGroup, separate from the learner's DeepSpeed world, so the
learner keeps its default group and rollout actors need no default group at all.
"""

import socket
from datetime import timedelta

import torch
import torch.distributed as dist

# One bucket: the (name, shape, dtype) of each tensor, in the order they are packed.
BucketSpec = list[tuple[str, tuple[int, ...], str]]


def tcp_store(address: str, port: int, world_size: int, is_master: bool, timeout_s: float) -> dist.TCPStore:
    """A rendezvous store whose master listens on `address` only. torch's own would listen on every
    interface; on the embedded cluster the address is 127.0.0.1, so nothing is reachable from outside."""
    listen_fd = None
    if is_master:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen()
        listen_fd = sock.detach()  # the store owns the descriptor from here on
    return dist.TCPStore(
        address,
        port,
        world_size,
        is_master=is_master,
        timeout=timedelta(seconds=timeout_s),
        wait_for_workers=False,
        master_listen_fd=listen_fd,
    )


def weight_sync_group(address: str, port: int, rank: int, world_size: int, timeout_s: float = 300.0):
    """A process group of learner rank 0 (rank 0 here) and every rollout actor; all must call it concurrently."""
    store = tcp_store(address, port, world_size, rank == 0, timeout_s)
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
