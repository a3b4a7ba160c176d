"""Auto-labelled synthetic overlays for training the query overlay detector, made on the fly.

Like the winners' detector data (RECIPES §4, §5, §7: YOLOv5 trained on auto-labelled synthetic overlays made
from training images), a positive sample pastes a (geometrically edited) training image onto another training
image or into a screenshot template and records the pasted box; a negative sample applies only
non-compositing edits, so the detector also learns where not to fire. The edits are the mini-DISC's own
(`isc_research.augment.edits`), applied in its order: geometric → one compositing edit → photometric (JPEG last).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from isc_research.data.datasets import random_readable_image
from isc_research.augment.edits import GEOMETRIC_EDITS, PHOTOMETRIC_EDITS, make_query
from isc_research.data.records import ImageRecord
from isc_research.images import ImageLoadError, load_image

__all__ = ["SyntheticOverlays", "draw_edit_names", "synthetic_overlay"]

Box = tuple[int, int, int, int]

# Compositing weights as the mini-DISC builder's (1.6 : 0.6, isc_research.augment.edits); the winners' mix is source
# silent.
_COMPOSITING_P = {"overlay_onto_background": 1.6 / 2.2, "screenshot": 0.6 / 2.2}


@dataclass(frozen=True)
class SyntheticSample:
    image: Image.Image
    box: Box | None  # pixels (x0, y0, x1, y1) of the pasted content; None for a negative
    edits: list[str]


def draw_edit_names(
    rng: np.random.Generator, overlay: bool, max_geometric: int = 1, max_photometric: int = 2
) -> list[str]:
    """Edit names in application order: 0..max_geometric geometric, one compositing edit if `overlay`, then
    0..max_photometric photometric ones (JPEG last). A negative gets at least one edit."""
    geometric = list(rng.choice(GEOMETRIC_EDITS, size=int(rng.integers(0, max_geometric + 1)), replace=False))
    photometric = list(rng.choice(PHOTOMETRIC_EDITS, size=int(rng.integers(0, max_photometric + 1)), replace=False))
    compositing = [str(rng.choice(list(_COMPOSITING_P), p=list(_COMPOSITING_P.values())))] if overlay else []
    if not (geometric or compositing or photometric):
        photometric = [str(rng.choice(PHOTOMETRIC_EDITS))]
    photometric.sort(key=lambda n: n == "jpeg")  # stable: the re-encode last, as in the mini-DISC
    return [str(n) for n in geometric] + compositing + [str(n) for n in photometric]


def synthetic_overlay(
    image: Image.Image,
    rng: np.random.Generator,
    other: Callable[[int], Image.Image],
    *,
    p_overlay: float = 0.6,
    max_side: int = 384,
    max_geometric: int = 1,
    max_photometric: int = 2,
) -> SyntheticSample:
    """One auto-labelled sample: with probability `p_overlay` `image` is pasted onto `other(0)` (or into a
    screenshot) and its box recorded; otherwise it only gets non-compositing edits (box None)."""
    names = draw_edit_names(rng, bool(rng.random() < p_overlay), max_geometric, max_photometric)
    out, names, box = make_query(image, rng, other, max_side=max_side, names=names)
    return SyntheticSample(out, box, names)


class SyntheticOverlays(Dataset):
    """`length` synthetic samples per epoch from random training images (sources and backgrounds alike).

    Each item is (image tensor (3, H, W) in [0, 1], target dict with `boxes` (n, 4) float and `labels` (n,)
    int64, n = 0 or 1), as torchvision's detection models take them. Draws come from torch's RNG, which
    isc-train-detector seeds per (seed, epoch, sample) (isc_research.data.sampling.SeededSamples), so every epoch sees
    new
    samples and a resumed run the same ones.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        length: int,
        *,
        p_overlay: float = 0.6,
        max_side: int = 384,
        draft_size: int | None = 512,
    ):
        if not records:
            raise ValueError("SyntheticOverlays needs training images; the training split is empty")
        if length < 1:
            raise ValueError(f"detector.data.samples_per_epoch must be >= 1, got {length}")
        if not 0.0 <= p_overlay <= 1.0:
            raise ValueError(f"detector.data.p_overlay must be in [0, 1], got {p_overlay}")
        self.records, self.length = list(records), int(length)
        self.p_overlay, self.max_side, self.draft_size = float(p_overlay), int(max_side), draft_size

    def __len__(self) -> int:
        return self.length

    def _random_image(self) -> Image.Image:
        return random_readable_image(
            self.records,
            self.draft_size,
            "training image (synthetic overlay)",
            "10 random training images in a row were unreadable; check the training folder",
        )[0]

    def sample(self) -> SyntheticSample:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
        return synthetic_overlay(
            self._random_image(), rng, lambda j: self._random_image(), p_overlay=self.p_overlay, max_side=self.max_side
        )

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        s = self.sample()
        return to_detection_input(s.image, s.box)


def to_detection_input(image: Image.Image, box: Box | None) -> tuple[torch.Tensor, dict]:
    """A PIL image and its optional box → torchvision detection (image, target)."""
    boxes = torch.tensor([box], dtype=torch.float32) if box is not None else torch.zeros((0, 4), dtype=torch.float32)
    return TF.to_dtype(TF.to_image(image.convert("RGB")), torch.float32, scale=True), {
        "boxes": boxes,
        "labels": torch.ones(len(boxes), dtype=torch.int64),
    }


class LabelledQueries(Dataset):
    """Queries with their recorded overlay box (None: no pasted content), for validating the detector."""

    def __init__(self, items: Sequence[tuple[ImageRecord, Box | None]]):
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        record, box = self.items[index]
        try:
            image = load_image(record.path)
        except ImageLoadError as error:
            raise ImageLoadError(f"{error} (a validation query of the overlay detector)") from error
        image, target = to_detection_input(image, box)
        return image, {**target, "index": index}  # the query's position: DDP validation gathers by it


def collate_detection(batch: list) -> tuple[list[torch.Tensor], list[dict]]:
    images, targets = zip(*batch)
    return list(images), list(targets)
