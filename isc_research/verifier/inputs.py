"""The verifier's input: a query and a candidate reference side by side in one square image.

"separate" (RECIPES §6) resizes the query and the reference to 224×112 (height × width) each and
concatenates them horizontally into one 224×224 image: query on the left, reference on the right.
Here both images first get the evaluation resize of the descriptor models (a square `size` × `size`,
isc_research.augment.eval_transform, or a training augmentation of that size), then each is squeezed to half the
width. Training and inference build the input with the same two functions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image

from isc_research.augment import eval_transform


def half_width(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) → (3, H, W // 2): bilinear, antialiased horizontal squeeze."""
    if image.ndim != 3:
        raise ValueError(f"expected one (3, H, W) image tensor, got shape {tuple(image.shape)}")
    h, w = image.shape[-2:]
    if w < 2:
        raise ValueError(f"image width {w} is too small to halve")
    return F.interpolate(image[None], size=(h, w // 2), mode="bilinear", antialias=True, align_corners=False)[0]


def side_by_side(query: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Two normalised (3, S, S) images → one (3, S, 2·(S // 2)) pair image: query left, reference right."""
    if query.shape != reference.shape:
        raise ValueError(
            f"query and reference tensors must have the same shape, got {tuple(query.shape)} "
            f"and {tuple(reference.shape)}"
        )
    return torch.cat([half_width(query), half_width(reference)], dim=-1)


class PairInput:
    """PIL (query, reference) → the (3, size, size) pair tensor the verifier scores (size even)."""

    def __init__(self, size: int):
        if int(size) < 8 or int(size) % 2:
            raise ValueError(f"the verifier's pair size must be an even integer >= 8, got {size!r}")
        self.size = int(size)
        self.resize = eval_transform(self.size)

    def __call__(self, query: Image.Image, reference: Image.Image) -> torch.Tensor:
        return side_by_side(self.resize(query), self.resize(reference))
