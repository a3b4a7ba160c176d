"""Losses compute in float32 whatever autocast is active.

Autocast's op lists differ between devices: CUDA runs `pow`, `acos`, `sum`, `softmax`, … in float32 and
matmuls in half, the CPU runs `pow` in the input's dtype. A loss written against one device's lists meets
mixed dtypes on another (S-square's ArcFace died in `scatter` on a GPU: a half `cosine` next to a float32
margin term, issue 15). Embeddings are L2-normalised and few, so the loss costs nothing next to the backbone:
run it in float32, with autocast off, on every device.
"""

from __future__ import annotations

import functools

import torch


def float32_loss(forward):
    """Decorate a loss's `forward(self, embeddings, labels, ...)`: the embeddings are cast to float32 and the
    body runs with autocast disabled, so every parameter (ArcFace weights, projector heads) and buffer (XBM's
    memory) meets float32 inputs, and the returned loss is float32."""

    @functools.wraps(forward)
    def wrapper(self, embeddings: torch.Tensor, labels: torch.Tensor, *args, **kwargs):
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            return forward(self, embeddings.float(), labels, *args, **kwargs)

    return wrapper
