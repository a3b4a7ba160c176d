"""Crop providers: the sub-images (views) of a query (or reference) searched besides the whole image.

A crop provider is any object with ``crops(image: PIL.Image.Image)`` returning a list of pixel boxes
``(x0, y0, x1, y1)`` (x1/y1 exclusive, inside the image) or of `View`s (a box plus a rotation and whether the
crop penalty applies), and a ``name``; `isc-match` builds it from the ``query_crops`` / ``reference_crops``
config groups with Hydra ``_target_``, so a detector plugs in without touching this code. The whole image is
always searched too: providers return only the extra views. A provider's ``penalised`` attribute (default
true) says whether ``candidates.crop_penalty`` lowers the scores of its plain boxes.

``min_side`` is measured in pixels of the image file: when the image was decoded at reduced size (JPEG draft
mode), `isc_research.match.views` records the file's size in ``image.info["source_size"]`` and boxes are scaled back.

* `NoCrops`: none.
* `GridCrops`: an n×n grid, optionally overlapping (separate's ``half_grid`` / ``2of6_grid`` query and
  reference crops, RECIPES §6; D²LV's reference "dividing" grids, §5).
* `CenterCrops`: centred crops keeping a fraction of each side (D²LV's centre crop [.25, .75]², §5).
* `FractionCrops`: boxes given in fractions of the image (D²LV's centre crop and four 1/6–5/6 quadrant crops).
* `Rotations`: the whole image turned by multiples of 90° (D²LV's query rotations 90/180/270, §5.3).
* `CropSet`: several providers together (D²LV's query side: rotations, crops, selective search, detector),
  with a ``min_side`` of its own over all their boxes (D²LV dropped query crops below 100–200 px, §5.3).
* `isc_research.match.proposals.SelectiveSearch`: region proposals (D²LV's selective-search query crops, §5.3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from PIL import Image

__all__ = [
    "Box",
    "CenterCrops",
    "CropSet",
    "FractionCrops",
    "GridCrops",
    "NoCrops",
    "Rotations",
    "View",
    "check_views",
    "source_side",
]

Box = tuple[int, int, int, int]
ROTATIONS = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}


class View(NamedTuple):
    """A sub-image: `box` cut from the image, then turned by `rotation` degrees counter-clockwise (0, 90, 180
    or 270: PIL's lossless transposes, as D²LV's rotate.py), and whether `candidates.crop_penalty` lowers its
    scores (D²LV lowered every sub-query but its YOLO crops, RECIPES §5.3 step 3)."""

    box: Box
    rotation: int = 0
    penalised: bool = True


def source_side(box: Sequence[float], image: Image.Image) -> float:
    """The short side of `box` in pixels of the image file (the image may have been decoded at reduced size)."""
    w0, h0 = image.info.get("source_size", image.size)
    return min((box[2] - box[0]) * w0 / image.width, (box[3] - box[1]) * h0 / image.height)


class NoCrops:
    """The whole image only."""

    name = "none"

    def crops(self, image: Image.Image) -> list[Box]:
        return []


class GridCrops:
    """Cells of n×n grids (one per entry of ``n``); ``overlap`` widens each cell by that fraction of a cell on
    every side (clipped to the image), so that content cut by a cell border is whole in some crop."""

    def __init__(self, n: int | Sequence[int] = 2, overlap: float = 0.0, min_side: int = 16) -> None:
        levels = [int(n)] if isinstance(n, int | float) else [int(v) for v in n]
        if not levels or min(levels) < 1:
            raise ValueError(f"GridCrops: n must be a positive integer or a list of them, got {n!r}")
        if not 0 <= float(overlap) < 1:
            raise ValueError(f"GridCrops: overlap must be in [0, 1), got {overlap!r}")
        self.levels, self.overlap, self.min_side = levels, float(overlap), int(min_side)
        self.name = "grid" + "+".join(str(v) for v in levels) + (f"_ov{self.overlap:g}" if self.overlap else "")

    def crops(self, image: Image.Image) -> list[Box]:
        w, h = image.size
        out: list[Box] = []
        for n in self.levels:
            if n == 1:
                continue  # the whole image is searched anyway
            cw, ch = w / n, h / n
            for i in range(n):
                for j in range(n):
                    x0 = max(0, round((j - self.overlap) * cw))
                    y0 = max(0, round((i - self.overlap) * ch))
                    x1 = min(w, round((j + 1 + self.overlap) * cw))
                    y1 = min(h, round((i + 1 + self.overlap) * ch))
                    if source_side((x0, y0, x1, y1), image) >= self.min_side:
                        out.append((x0, y0, x1, y1))
        return out


class CenterCrops:
    """One centred crop per fraction f: the middle f·w × f·h of the image."""

    def __init__(self, fractions: float | Sequence[float] = (0.5,), min_side: int = 16) -> None:
        fractions = [float(fractions)] if isinstance(fractions, int | float) else [float(f) for f in fractions]
        if not fractions or not all(0 < f < 1 for f in fractions):
            raise ValueError(f"CenterCrops: fractions must lie in (0, 1), got {fractions!r}")
        self.fractions, self.min_side = fractions, int(min_side)
        self.name = "center" + "+".join(f"{f:g}" for f in fractions)

    def crops(self, image: Image.Image) -> list[Box]:
        w, h = image.size
        out: list[Box] = []
        for f in self.fractions:
            cw, ch = round(w * f), round(h * f)
            x0, y0 = (w - cw) // 2, (h - ch) // 2
            if source_side((x0, y0, x0 + cw, y0 + ch), image) >= self.min_side:
                out.append((x0, y0, x0 + cw, y0 + ch))
        return out


class FractionCrops:
    """Boxes given as fractions [x0, y0, x1, y1] of the image's width and height, cut at int(side·f) as D²LV's
    center.py did (its centre crop [.25, .75]² and the four quadrants of the [1/6, 5/6]² square, RECIPES §5.3)."""

    def __init__(self, boxes: Sequence[Sequence[float]], min_side: int = 16, name: str = "fractions") -> None:
        self.boxes = [tuple(float(v) for v in b) for b in boxes]
        bad = [b for b in self.boxes if len(b) != 4 or not (0 <= b[0] < b[2] <= 1 and 0 <= b[1] < b[3] <= 1)]
        if not self.boxes or bad:
            raise ValueError(
                f"FractionCrops: boxes must be [x0, y0, x1, y1] with 0 <= x0 < x1 <= 1 and "
                f"0 <= y0 < y1 <= 1, got {bad or boxes!r}"
            )
        self.min_side, self.name = int(min_side), name

    def crops(self, image: Image.Image) -> list[Box]:
        w, h = image.size
        # floor as the source's int(); the 1e-9 keeps exact multiples exact for fractions written in decimals
        # (600 × 0.1666… is 99.999…, where center.py's int(600 * 1/6) is 100)
        out = [tuple(int(side * f + 1e-9) for side, f in zip((w, h, w, h), b)) for b in self.boxes]
        return [b for b in out if b[2] > b[0] and b[3] > b[1] and source_side(b, image) >= self.min_side]


class Rotations:
    """The whole image turned by each angle (degrees counter-clockwise: 90, 180, 270)."""

    def __init__(self, angles: Sequence[int] = (90, 180, 270)) -> None:
        self.angles = [int(a) for a in angles]
        if not self.angles or any(a not in ROTATIONS for a in self.angles):
            raise ValueError(f"Rotations: angles must be among 90, 180, 270, got {list(angles)!r}")
        self.name = "rot" + "+".join(str(a) for a in self.angles)

    def crops(self, image: Image.Image) -> list[View]:
        return [View((0, 0, image.width, image.height), a) for a in self.angles]


class CropSet:
    """The views of several providers, in order (a list, or a mapping name → provider whose null entries are
    switched off, e.g. ``query_crops.providers.detector=null``); `min_side` (pixels of the image file) drops
    every view of theirs whose short side is smaller. D²LV dropped every query sub-image below 100, 150 or
    200 px depending on the model folder (RECIPES §5.3, generate_100_150_200.py); here the whole image is
    always searched."""

    def __init__(self, providers: Sequence[object] | Mapping[str, object], min_side: int = 0) -> None:
        items = providers.values() if isinstance(providers, Mapping) else providers
        self.providers = [p for p in items if p is not None]
        if not self.providers:
            raise ValueError("CropSet: give at least one provider")
        for p in self.providers:
            if not callable(getattr(p, "crops", None)):
                raise TypeError(
                    f"CropSet: {type(p).__name__} has no crops(image) method (see isc_research/match/crops.py)"
                )
        self.min_side = int(min_side)
        self.name = "+".join(getattr(p, "name", type(p).__name__) for p in self.providers)

    def crops(self, image: Image.Image) -> list[View]:
        out = []
        for provider in self.providers:
            out += [
                v
                for v in check_views(provider.crops(image), image, provider)
                if source_side(v.box, image) >= self.min_side
            ]
        return out


def check_views(views: object, image: Image.Image, provider: object) -> list[View]:
    """The views of a provider (plain boxes become `View`s with no rotation and the provider's ``penalised``),
    or a clear error naming the provider and the bad entry."""
    name = getattr(provider, "name", type(provider).__name__)
    penalised = bool(getattr(provider, "penalised", True))
    if not isinstance(views, list | tuple):
        raise TypeError(
            f"crop provider {name!r} returned {type(views).__name__}; crops() must return a list of "
            "(x0, y0, x1, y1) pixel boxes or View(box, rotation, penalised) entries"
        )
    w, h = image.size
    out = []
    for entry in views:
        view = entry if isinstance(entry, View) else View(entry, 0, penalised)
        if view.rotation not in (0, *ROTATIONS):
            raise ValueError(f"crop provider {name!r} returned rotation {view.rotation!r}; use 0, 90, 180 or 270")
        try:
            x0, y0, x1, y1 = (int(round(float(v))) for v in view.box)
        except (TypeError, ValueError):
            raise ValueError(
                f"crop provider {name!r} returned {entry!r}; a box is 4 numbers (x0, y0, x1, y1)"
            ) from None
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise ValueError(f"crop provider {name!r} returned the empty box {tuple(view.box)!r} for a {w}×{h} image")
        out.append(View((x0, y0, x1, y1), int(view.rotation), bool(view.penalised)))
    return out
