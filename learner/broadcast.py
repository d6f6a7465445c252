"""[weight broadcast] Send side: learner rank 0 packs its weights into buckets and broadcasts them.

Buckets bound the extra memory to `bucket_mb` and turn hundreds of small messages into a few large
ones; each bucket holds tensors of one dtype, packed in a fixed order that the receivers learn once.
"""

from collections.abc import Iterable

import torch

from actors.broadcast import BucketSpec, start_broadcast


def plan_buckets(named_tensors: Iterable[tuple[str, torch.Tensor]], bucket_mb: float) -> list[BucketSpec]:
    """Group tensors (in order) into buckets of one dtype and at most `bucket_mb` (a bigger tensor goes alone)."""
    limit = bucket_mb * 2**20
    buckets: list[BucketSpec] = []
    size = 0.0
    for name, tensor in named_tensors:
        dtype = str(tensor.dtype).removeprefix("torch.")
        nbytes = tensor.numel() * tensor.element_size()
        if not buckets or buckets[-1][0][2] != dtype or size + nbytes > limit:
            buckets.append([])
            size = 0.0
        buckets[-1].append((name, tuple(tensor.shape), dtype))
        size += nbytes
    return buckets


def send(group, buckets: list[BucketSpec], tensors: dict[str, torch.Tensor], buffers: list | None = None) -> int:
    """Broadcast every bucket from rank 0; returns the bytes sent.

    Double-buffered: bucket k+1 is packed while bucket k is on the wire. `buffers`, if given, is the
    caller's pair of byte buffers, allocated on the first call and reused after.
    """
    sizes = [sum(tensors[name].numel() * tensors[name].element_size() for name, _, _ in spec) for spec in buckets]
    buffers = [] if buffers is None else buffers
    if not buffers or buffers[0].numel() < max(sizes, default=0):
        buffers[:] = [torch.empty(max(sizes, default=0), dtype=torch.uint8) for _ in range(2)]
    pending = None
    for k, (spec, size) in enumerate(zip(buckets, sizes)):
        flat = buffers[k % 2][:size].view(getattr(torch, spec[0][2]))
        torch.cat([tensors[name].detach().reshape(-1) for name, _, _ in spec], out=flat)
        if pending is not None:
            pending.wait()  # bucket k-1 has left; its buffer is the one bucket k+1 will fill
        pending = start_broadcast(group, flat)
    if pending is not None:
        pending.wait()
    return sum(sizes)
