"""Descriptors of image views: the whole image plus the boxes of a crop provider, embedded by an extractor of
`isc.extract` (checkpoint model with its eval transform and TTA, or a baseline)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from isc.data.records import ImageRecord
from isc.images import draft_floor, load_image
from isc.match.crops import Box, check_boxes

__all__ = ["ViewDescriptors", "embed_views"]


@dataclass(frozen=True, eq=False)
class ViewDescriptors:
    """One row per view: the image it comes from (index into the records), its box (the whole image for the
    first view of every image), whether it is the whole image, and its descriptor (as the extractor gives it)."""

    owner: np.ndarray   # (n,) int64
    boxes: np.ndarray   # (n, 4) int64, x0 y0 x1 y1
    whole: np.ndarray   # (n,) bool
    vectors: np.ndarray  # (n, d) float32

    def __len__(self) -> int:
        return len(self.owner)


class _ImageViews(Dataset):
    def __init__(self, records: Sequence[ImageRecord], provider, transform, draft_size: int | None) -> None:
        self.records, self.provider, self.transform, self.draft_size = list(records), provider, transform, draft_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        image = load_image(self.records[index].path, draft_size=self.draft_size)
        boxes: list[Box] = [(0, 0, image.width, image.height)]
        boxes += check_boxes(self.provider.crops(image), image, self.provider)
        views = []
        for j, box in enumerate(boxes):
            out = self.transform(image if j == 0 else image.crop(box))
            views.append(out if isinstance(out, list | tuple) else [out])
        return {"index": index, "boxes": boxes, "views": views}


def embed_views(extractor, records: Sequence[ImageRecord], provider, *, batch_size: int = 128,
                num_workers: int = 0, draft_size: int | None = None, desc: str = "views") -> ViewDescriptors:
    """Descriptors of every image of `records` and of the crops `provider` proposes for it."""
    draft = draft_floor(draft_size, *getattr(extractor.transform, "sides", ()))  # never below the eval side
    loader = DataLoader(_ImageViews(records, provider, extractor.transform, draft), batch_size=None,
                        shuffle=False, num_workers=num_workers)
    owners, boxes, whole, vectors = [], [], [], []
    pending: list[list[torch.Tensor]] = []

    def flush() -> None:
        if pending:
            per_scale = [[v[s] for v in pending] for s in range(len(pending[0]))]
            vectors.append(np.asarray(extractor.embed(per_scale), np.float32))
            pending.clear()

    for item in tqdm(loader, total=len(records), desc=desc, unit="img"):
        for j, (box, view) in enumerate(zip(item["boxes"], item["views"])):
            owners.append(item["index"])
            boxes.append(box)
            whole.append(j == 0)
            pending.append(view)
            if len(pending) == batch_size:
                flush()
    flush()
    return ViewDescriptors(np.asarray(owners, np.int64), np.asarray(boxes, np.int64).reshape(-1, 4),
                           np.asarray(whole, bool), np.concatenate(vectors) if vectors else np.zeros((0, 0), np.float32))
