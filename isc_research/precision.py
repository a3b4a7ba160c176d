"""Float32 islands under mixed precision: the descriptor head and the losses compute in float32 whatever
autocast is active.

Autocast's op lists differ between devices: CUDA runs `pow`, `acos`, `sum`, `softmax`, … in float32 and
matmuls in half, the CPU runs `pow` in the input's dtype. Code written against one device's lists meets mixed
dtypes on another (S-square's ArcFace died in `scatter` on a GPU: a half `cosine` next to a float32 margin
term, issue 15). The head and the losses see a few thousand numbers per image, nothing next to the backbone:
they run in float32, with autocast off, on every device.
"""

from __future__ import annotations

import contextlib
import functools

import torch


def autocast_off(tensor: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast disabled on `tensor`'s device (nothing to disable on a device without autocast, e.g. meta)."""
    device = tensor.device.type
    if not torch.amp.is_autocast_available(device):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, enabled=False)


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Half and bfloat16 as float32; float32 and float64 (the reference tests) as they are."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


def float32_loss(forward):
    """Decorate a loss's `forward(self, embeddings, labels, ...)`: half embeddings are cast to float32 and the
    body runs with autocast off, so every parameter (ArcFace weights, projector heads) and buffer (XBM's
    memory) meets float32 inputs, and the returned loss is float32."""

    @functools.wraps(forward)
    def wrapper(self, embeddings: torch.Tensor | dict[str, torch.Tensor], labels: torch.Tensor, *args, **kwargs):
        if isinstance(embeddings, dict):  # a model head's parts (VisionForce / D²LV: model.forward_parts)
            with autocast_off(next(iter(embeddings.values()))):
                return forward(self, {k: at_least_float32(v) for k, v in embeddings.items()}, labels, *args, **kwargs)
        with autocast_off(embeddings):
            return forward(self, at_least_float32(embeddings), labels, *args, **kwargs)

    return wrapper
