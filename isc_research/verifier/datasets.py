"""Torch datasets of side-by-side pair images: training (1 positive + n negatives per anchor) and validation."""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from isc_research.data.datasets import random_readable_image
from isc_research.data.records import ImageRecord
from isc_research.images import ImageLoadError, load_image
from isc_research.verifier.inputs import PairInput, side_by_side
from isc_research.verifier.pairs import Anchor, ValidationPairs

log = logging.getLogger(__name__)


class TrainingPairs(Dataset):
    """Anchor i → `pairs` (1 + n, 3, S, S) and `labels` (1 + n,): the query view next to its true reference
    (label 1), then next to `n_negatives` non-matching images (label 0), drawn uniformly from the anchor's hard
    negatives, or from `pool` when it has none. The query view is `query_view(image)` for augmented anchors
    (the augmentation policy's copy view) and `plain(image)` for real queries; references are always `plain`
    (resized as at test time). Unreadable images: the anchor yields None (dropped and counted by the collate);
    an unreadable negative is replaced by another random pool image."""

    def __init__(
        self,
        anchors: Sequence[Anchor],
        query_view: Callable,
        plain: Callable,
        pool: Sequence[ImageRecord],
        n_negatives: int,
        draft_size: int | None = None,
    ):
        if n_negatives < 0:
            raise ValueError(f"pairs.negatives_per_positive must be >= 0, got {n_negatives}")
        if n_negatives and len(pool) < 2:
            raise ValueError("random negatives need at least two images in the pool")
        self.anchors, self.query_view, self.plain = list(anchors), query_view, plain
        self.pool, self.n_negatives, self.draft_size = list(pool), n_negatives, draft_size
        self.needs_other = getattr(query_view, "needs_other_images", False)

    def __len__(self) -> int:
        return len(self.anchors)

    def _other_image(self) -> Image.Image:
        return random_readable_image(
            self.pool,
            self.draft_size,
            "overlay image",
            "10 random images in a row were unreadable; check the training folder",
        )[0]

    def _negative(self, anchor: Anchor) -> torch.Tensor:
        if anchor.negatives:
            record = anchor.negatives[int(torch.randint(len(anchor.negatives), ()))]
            try:
                return self.plain(load_image(record.path, draft_size=self.draft_size))
            except ImageLoadError as error:
                log.warning("skipping hard negative: %s", error)
        for _ in range(10):
            image, index = random_readable_image(
                self.pool, self.draft_size, "random negative", "10 random negative images in a row were unreadable"
            )
            if self.pool[index].id not in (anchor.query.id, anchor.reference.id):
                return self.plain(image)
        raise RuntimeError(f"could not draw a random negative for {anchor.query.id} from {len(self.pool)} images")

    def __getitem__(self, index: int) -> dict | None:
        anchor = self.anchors[index]
        try:
            reference_image = load_image(anchor.reference.path, draft_size=self.draft_size)
            query_image = (
                reference_image if anchor.augment else load_image(anchor.query.path, draft_size=self.draft_size)
            )
        except ImageLoadError as error:
            log.warning("skipping training pair: %s", error)
            return None
        if anchor.augment:
            query = (
                self.query_view(query_image, other=self._other_image)
                if self.needs_other
                else self.query_view(query_image)
            )
        else:
            query = self.plain(query_image)
        partners = [self.plain(reference_image)] + [self._negative(anchor) for _ in range(self.n_negatives)]
        pairs = torch.stack([side_by_side(query, partner) for partner in partners])
        labels = torch.zeros(len(partners))
        labels[0] = 1.0
        return {"pairs": pairs, "labels": labels}


class ValidationPairImages(Dataset):
    """Pair i of `pairs` as the verifier sees it at inference (isc_research.verifier.inputs.PairInput)."""

    def __init__(self, pairs: ValidationPairs, size: int, draft_size: int | None = None):
        self.pairs, self.input, self.draft_size = pairs, PairInput(size), draft_size

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        query = load_image(self.pairs.queries[index].path, draft_size=self.draft_size)
        reference = load_image(self.pairs.references[index].path, draft_size=self.draft_size)
        return {"pair": self.input(query, reference), "index": index}
