"""Crop providers: the sub-images of a query (or reference) searched besides the whole image.

A crop provider is any object with ``crops(image: PIL.Image.Image) -> list[(x0, y0, x1, y1)]`` (pixel boxes,
x1/y1 exclusive, inside the image) and a ``name``; `isc-match` builds it from the ``query_crops`` /
``reference_crops`` config groups with Hydra ``_target_``, so a detector plugs in without touching this code.
The whole image is always searched too: providers return only the extra boxes.

* `NoCrops`: none.
* `GridCrops`: an n×n grid, optionally overlapping (separate's ``half_grid`` / ``2of6_grid`` query and
  reference crops, RECIPES §6; D²LV's reference "dividing" grids, §5).
* `CenterCrops`: centred crops keeping a fraction of each side (D²LV's centre crop [.25, .75]², §5).
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

__all__ = ["Box", "CenterCrops", "GridCrops", "NoCrops", "check_boxes"]

Box = tuple[int, int, int, int]


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
                    if min(x1 - x0, y1 - y0) >= self.min_side:
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
            if min(cw, ch) >= self.min_side:
                x0, y0 = (w - cw) // 2, (h - ch) // 2
                out.append((x0, y0, x0 + cw, y0 + ch))
        return out


def check_boxes(boxes: object, image: Image.Image, provider: object) -> list[Box]:
    """The boxes of a provider as int tuples, or a clear error naming the provider and the bad box."""
    name = getattr(provider, "name", type(provider).__name__)
    if not isinstance(boxes, list | tuple):
        raise TypeError(f"crop provider {name!r} returned {type(boxes).__name__}; crops() must return a list of "
                        "(x0, y0, x1, y1) pixel boxes")
    w, h = image.size
    out = []
    for box in boxes:
        try:
            x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        except (TypeError, ValueError):
            raise ValueError(f"crop provider {name!r} returned {box!r}; a box is 4 numbers (x0, y0, x1, y1)") from None
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise ValueError(f"crop provider {name!r} returned the empty box {tuple(box)!r} for a {w}×{h} image")
        out.append((x0, y0, x1, y1))
    return out
