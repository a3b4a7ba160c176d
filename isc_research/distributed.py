"""Small helpers over torch.distributed that are no-ops in a single process.

Gathers concatenate in rank order, so every rank sees the same global batch in the same order (a memory bank
filled from it is identical on every rank). `gather_with_grad` keeps the autograd graph: torch's all_gather
backward sums the gradients that every rank computes for a slice, so when every rank evaluates the same loss
on the global batch, DDP's gradient averaging (÷ world size) leaves exactly the single-process gradient.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def _sizes(tensor: torch.Tensor) -> list[int]:
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from every rank (rank order; first dimensions may differ); gradients flow back
    to each rank's slice."""
    if not is_distributed():
        return tensor
    from torch.distributed.nn.functional import all_gather

    sizes = _sizes(tensor)
    longest = max(sizes)
    pad = [0, 0] * (tensor.ndim - 1) + [0, longest - tensor.shape[0]]
    padded = F.pad(tensor, pad) if longest > tensor.shape[0] else tensor
    parts = all_gather(padded.contiguous())
    return torch.cat([part[:n] for part, n in zip(parts, sizes)], dim=0)


def gather_uneven(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate tensors whose first dimension differs between ranks (rank order, no gradient)."""
    if not is_distributed():
        return tensor
    sizes = _sizes(tensor)
    longest = max(sizes)
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.zeros_like(padded) for _ in range(len(sizes))]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:n] for g, n in zip(gathered, sizes)], dim=0)


def gather_objects(items: list) -> list:
    """Concatenate picklable per-rank lists in rank order (torch.distributed.all_gather_object); the list itself
    in a single process."""
    if not is_distributed():
        return items
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (no gradient); the tensor itself in a single process."""
    if not is_distributed():
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor)
    return tensor


def global_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of per-sample `values` over the global batch, for losses computed on each rank's own samples.

    Its value is the global mean on every rank; its gradient is this rank's share scaled so that DDP's
    averaging over ranks gives the single-process gradient, even when ranks hold different sample counts.
    """
    if not is_distributed():
        return values.mean()
    totals = all_reduce_sum(torch.stack([values.detach().sum(), values.new_tensor(float(values.numel()))]))
    share = values.sum() * world_size() / totals[1]
    return share + (totals[0] / totals[1] - share).detach()
