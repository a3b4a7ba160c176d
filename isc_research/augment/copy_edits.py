"""Training views made with the mini-DISC query edits (AugLy-style crops, overlays, colour, JPEG…).

The two-view scheme follows lyakaap (RECIPES §2.3): one moderate view, one hard view. Here the hard view
applies 1–3 of the same edits that made the mini-DISC queries (isc_research.augment.edits.EDITS), so the model
learns to ignore exactly that family of edits, as the ISC2021 winners did with AugLy for DISC21.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2 as T

from isc_research.augment import ops
from isc_research.augment.edits import make_query
from isc_research.augment.policies import ToRGB, _to_normalised_tensor, eval_transform
from isc_research.images import fit_long_side

OtherImages = Callable[[], Image.Image]  # returns a random other training image


class CopyEditView:
    """One hard view: random copy edits, colour jitter and grayscale (as lyakaap's hard view: torchvision's
    ColorJitter and RandomGrayscale, computed by the ops the recipe policies use), then a square resize. Needs
    other images (overlays)."""

    needs_other_images = True

    def __init__(
        self,
        size: int,
        jitter: tuple[float, float, float, float] = (0.7, 0.7, 0.7, 0.2),
        jitter_p: float = 1.0,
        grayscale_p: float = 0.25,
    ):
        self.size = size
        self.jitter, self.jitter_p, self.grayscale_p = tuple(jitter), jitter_p, grayscale_p
        self.finish = eval_transform(size)

    def __call__(self, image: Image.Image, other: OtherImages) -> torch.Tensor:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))  # follows torch's per-worker seeding
        image = self._shrink(image)  # edit at ~2× the output size: same result, a fraction of the cost
        edited, _, _ = make_query(image, rng, other=lambda _: self._shrink(other()), max_side=max(image.size))
        if rng.random() < self.jitter_p:
            edited = ops.color_jitter(edited, rng, *self.jitter)
        if rng.random() < self.grayscale_p:
            edited = ops.grayscale(edited)
        return self.finish(edited)

    def _shrink(self, image: Image.Image) -> Image.Image:
        return fit_long_side(image, 2 * self.size, Image.BILINEAR)


def copy_edits(
    size: int,
    moderate_scale: tuple[float, float] = (0.7, 1.0),
    jitter: tuple[float, float, float, float] = (0.7, 0.7, 0.7, 0.2),
    jitter_p: float = 1.0,
    grayscale_p: float = 0.25,
) -> tuple[Callable, CopyEditView]:
    """(moderate view, hard view): RandomResizedCrop(scale=moderate_scale) + flip, and the copy edits
    followed by colour jitter (probability jitter_p) and grayscale (probability grayscale_p)."""
    moderate = T.Compose(
        [
            ToRGB(),
            T.RandomResizedCrop(size, scale=tuple(moderate_scale), antialias=True),
            T.RandomHorizontalFlip(),
            *_to_normalised_tensor(),
        ]
    )
    return moderate, CopyEditView(size, tuple(jitter), jitter_p, grayscale_p)
