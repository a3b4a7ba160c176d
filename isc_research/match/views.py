"""Descriptors of image views: the whole image plus the boxes of a crop provider, embedded by an extractor of
`isc_research.extract` (checkpoint model with its eval transform and TTA, or a baseline)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from isc_research.data.records import ImageRecord
from isc_research.images import draft_floor, image_size, load_image
from isc_research.match.crops import ROTATIONS, View, check_views

__all__ = ["ViewDescriptors", "embed_views"]


@dataclass(frozen=True, eq=False)
class ViewDescriptors:
    """One row per view: the image it comes from (index into the records), its box (the whole image for the
    first view of every image), whether it is the whole image, its rotation (degrees counter-clockwise, after
    the crop), whether the crop penalty applies to it, and its descriptor (as the extractor gives it)."""

    owner: np.ndarray  # (n,) int64
    boxes: np.ndarray  # (n, 4) int64, x0 y0 x1 y1
    whole: np.ndarray  # (n,) bool
    vectors: np.ndarray  # (n, d) float32
    rotation: np.ndarray | None = None  # (n,) int64; None = all 0
    penalised: np.ndarray | None = None  # (n,) bool; None = every view but the whole image

    def __len__(self) -> int:
        return len(self.owner)

    def select(self, keep: np.ndarray) -> ViewDescriptors:
        """The views where the boolean mask `keep` is true (view indices change)."""

        def pick(a):
            return None if a is None else a[keep]

        return ViewDescriptors(
            self.owner[keep],
            self.boxes[keep],
            self.whole[keep],
            self.vectors[keep],
            pick(self.rotation),
            pick(self.penalised),
        )


class _ImageViews(Dataset):
    """Each image decoded and cropped once; every box transformed by each model's eval transform."""

    def __init__(self, records: Sequence[ImageRecord], provider, transforms: Sequence, draft_size: int | None) -> None:
        self.records, self.provider, self.transforms, self.draft_size = (
            list(records),
            provider,
            list(transforms),
            draft_size,
        )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        path = self.records[index].path
        image = load_image(path, draft_size=self.draft_size)
        if self.draft_size:  # crop sizes (min_side) are measured in pixels of the file (isc_research.match.crops)
            image.info["source_size"] = image_size(path)
        views: list[View] = [View((0, 0, image.width, image.height), 0, False)]
        views += check_views(self.provider.crops(image), image, self.provider)
        crops = []
        for j, view in enumerate(views):
            crop = image if j == 0 else image.crop(view.box)
            crops.append(crop.transpose(ROTATIONS[view.rotation]) if view.rotation else crop)
        tensors = []  # per model: per view, the list of its TTA tensors
        for transform in self.transforms:
            outs = [transform(crop) for crop in crops]
            tensors.append([out if isinstance(out, list | tuple) else [out] for out in outs])
        return {"index": index, "views": views, "tensors": tensors}


def embed_views(
    extractors: Sequence,
    records: Sequence[ImageRecord],
    provider,
    *,
    batch_size: int = 128,
    num_workers: int = 0,
    draft_size: int | None = None,
    desc: str = "views",
) -> list[ViewDescriptors]:
    """Descriptors of every image of `records` and of the crops `provider` proposes for it, one ViewDescriptors
    per extractor. Each image is decoded and cropped once for all extractors, so every model sees the same
    boxes in the same order (a view index means the same crop in each)."""
    sides = [side for e in extractors for side in getattr(e.transform, "sides", ())]
    draft = draft_floor(draft_size, *sides)  # never below the largest eval side
    loader = DataLoader(
        _ImageViews(records, provider, [e.transform for e in extractors], draft),
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
    )
    owners, boxes, whole, rotation, penalised = [], [], [], [], []
    vectors: list[list[np.ndarray]] = [[] for _ in extractors]
    pending: list[list[list[torch.Tensor]]] = [[] for _ in extractors]

    def flush() -> None:
        for m, extractor in enumerate(extractors):
            if pending[m]:
                per_scale = [[v[s] for v in pending[m]] for s in range(len(pending[m][0]))]
                vectors[m].append(np.asarray(extractor.embed(per_scale), np.float32))
                pending[m].clear()

    for item in tqdm(loader, total=len(records), desc=desc, unit="img"):
        for j, view in enumerate(item["views"]):
            owners.append(item["index"])
            boxes.append(view.box)
            whole.append(j == 0)
            rotation.append(view.rotation)
            penalised.append(view.penalised)
            for m in range(len(extractors)):
                pending[m].append(item["tensors"][m][j])
            if len(pending[0]) == batch_size:
                flush()
    flush()
    owner, box_array, whole_array = (
        np.asarray(owners, np.int64),
        np.asarray(boxes, np.int64).reshape(-1, 4),
        np.asarray(whole, bool),
    )
    rotation_array, penalised_array = np.asarray(rotation, np.int64), np.asarray(penalised, bool)
    return [
        ViewDescriptors(
            owner,
            box_array,
            whole_array,
            np.concatenate(v) if v else np.zeros((0, 0), np.float32),
            rotation_array,
            penalised_array,
        )
        for v in vectors
    ]
