"""[weight broadcast] Send side: learner rank 0 packs its weights into buckets and broadcasts them.

Buckets bound the extra memory to `bucket_mb` and turn hundreds of small messages into a few large
ones; each bucket holds tensors of one dtype, packed in a fixed order that the receivers learn once.
"""

from collections.abc import Iterable

import torch

from actors.broadcast import BucketSpec, broadcast_bucket


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


def send(group, buckets: list[BucketSpec], tensors: dict[str, torch.Tensor]) -> int:
    """Broadcast every bucket from rank 0; returns the bytes sent."""
    sent = 0
    for spec in buckets:
        flat = torch.cat([tensors[name].detach().reshape(-1) for name, _, _ in spec])
        broadcast_bucket(group, flat)
        sent += flat.numel() * flat.element_size()
    return sent
