"""Descriptors of a trained isc-train checkpoint, for hard-negative mining and as the baseline score of the
validation pairs (cosine similarity)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from isc_research.augment import eval_transform
from isc_research.data.datasets import EvalImages, collate_skipping
from isc_research.data.records import ImageRecord
from isc_research.checkpoints import load_checkpoint
from isc_research.scaling import resolve_device


class DescriptorIndex:
    """L2-normalised descriptors of image records by id, from an isc-train checkpoint at its eval size."""

    def __init__(
        self,
        ckpt_path: str | Path,
        device: str = "auto",
        batch_size: int = 128,
        num_workers: int = 0,
        draft_size: int | None = None,
    ):
        self.model, config = load_checkpoint(ckpt_path)
        self.size = int((config.get("data") or {}).get("eval_size") or 0)
        if not self.size:
            raise ValueError(f"mining.ckpt_path={str(ckpt_path)!r} does not record data.eval_size")
        self.device = resolve_device(device)
        self.model.to(self.device)
        self.batch_size, self.num_workers, self.draft_size = batch_size, num_workers, draft_size
        self.vectors: dict[str, np.ndarray] = {}

    @torch.no_grad()
    def add(self, records: Sequence[ImageRecord]) -> None:
        """Embed the records not embedded yet (an unreadable image is an error naming the file)."""
        todo = list({r.id: r for r in records if r.id not in self.vectors}.values())
        if not todo:
            return
        loader = DataLoader(
            EvalImages(todo, eval_transform(self.size), draft_size=self.draft_size),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_skipping,
        )
        for batch in loader:
            out = self.model(batch["image"].to(self.device)).float().cpu().numpy()
            for i, vector in zip(batch["index"].tolist(), out):
                self.vectors[todo[i].id] = vector

    def matrix(self, records: Sequence[ImageRecord]) -> np.ndarray:
        """(len(records), d) descriptors, embedding the missing ones first."""
        self.add(records)
        return np.stack([self.vectors[r.id] for r in records])
