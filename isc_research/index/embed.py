"""Image files → descriptors with a checkpoint's model, reporting (never dropping silently) unreadable files.

`Embedder` wraps `isc_research.extract.ModelExtractor` (the eval transform and TTA of isc-eval); `embed_files` decodes
the files in DataLoader workers, embeds them batch by batch under a progress bar, and returns the vectors of
the readable files with the (path, reason) of every unreadable one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from isc_research.checkpoints import load_checkpoint
from isc_research.extract import EvalTransform, ModelExtractor
from isc_research.finite import EXTRACTION_FIX, FLOAT32_FIX, check_finite
from isc_research.images import ImageLoadError, draft_floor, load_image, scan_files, warn_unused

log = logging.getLogger(__name__)

__all__ = ["Embedder", "Embedded", "canonical", "list_images"]


@dataclass
class Embedded:
    """Descriptors of the readable files (`vectors[i]` belongs to `paths[i]`) and the unreadable ones."""

    paths: list[Path]
    vectors: np.ndarray
    failed: list[tuple[Path, str]] = field(default_factory=list)


def list_images(inputs: Iterable[str | os.PathLike]) -> tuple[list[Path], list[Path]]:
    """(image files, other files) of `inputs`: a file is taken as an image whatever its name (a broken one is
    reported when embedded); a folder is searched recursively for files with an image suffix, and its other
    files are returned second so that the caller can say how many were ignored."""
    images, others = [], []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_file():
            images.append(canonical(path))
        elif path.is_dir():
            found, other, broken = scan_files(sorted(path.rglob("*")))
            warn_unused(path, other, broken, log)
            images += [canonical(p) for p in found]
            others += [canonical(p) for p in other + broken]
        else:
            raise FileNotFoundError(f"{path}: no such file or folder (give image files or folders of images)")
    return images, others


def canonical(path: str | os.PathLike) -> Path:
    """The one name of a file in an index: absolute, with `.` and `..` resolved (`../dir/a.jpg` from `dir` is
    `dir/a.jpg`), symbolic links kept as given."""
    return Path(os.path.abspath(Path(path).expanduser()))


MIN_SIDE = 16  # isc's choice: below 16 px an image holds too little to be called a copy of anything


class _Files(Dataset):
    def __init__(self, paths: Sequence[Path], transform: EvalTransform, draft_size: int | None):
        self.paths, self.transform, self.draft_size = list(paths), transform, draft_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        try:
            image = load_image(self.paths[i], draft_size=self.draft_size)
            if min(image.size) < MIN_SIDE:
                return {
                    "index": i,
                    "error": f"{image.width}×{image.height} px is too small to compare (at least "
                    f"{MIN_SIDE} px a side: a smaller image resized up matches almost anything)",
                }
            return {"index": i, "views": self.transform(image)}
        except ImageLoadError as error:
            return {"index": i, "error": error.reason or str(error)}
        except Exception as error:  # a decodable file the transform cannot handle (e.g. 1 × 1 px): report it
            return {"index": i, "error": f"{type(error).__name__}: {error}"}


def _collate(batch: list[dict]) -> dict:
    ok = [s for s in batch if "views" in s]
    views = [[s["views"][j] for s in ok] for j in range(len(ok[0]["views"]))] if ok else []  # per scale
    return {
        "index": [s["index"] for s in ok],
        "views": views,
        "failed": [(s["index"], s["error"]) for s in batch if "error" in s],
    }


class Embedder:
    """The descriptor model of an isc-train checkpoint with the eval transform it was validated with."""

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        *,
        size: int | None = None,
        resize: str = "square",
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        device: str = "cpu",
        draft_size: int | None = 256,
    ) -> None:
        self.checkpoint = Path(checkpoint).expanduser().absolute()
        model, config = load_checkpoint(self.checkpoint)
        size = size or (config.get("data") or {}).get("eval_size")
        if not size:
            raise ValueError(f"{self.checkpoint} does not record data.eval_size: pass the image side with --size N")
        self.train_config = config
        self.transform = EvalTransform(int(size), resize, list(scales))
        self.extractor = ModelExtractor(model, self.transform, flip=flip, device=torch.device(device))
        self.draft_size = draft_floor(draft_size, *self.transform.sides)  # never below the eval side
        self.dim = int(model.embedding_dim)

    def settings(self) -> dict:
        """What a query must be embedded with to be comparable: weights and transform (stored in the index)."""
        return {"checkpoint": str(self.checkpoint), **self.extractor.fingerprint(), "dim": self.dim}

    def embed_files(
        self,
        paths: Sequence[Path],
        *,
        batch_size: int = 64,
        num_workers: int = 0,
        progress: bool = True,
        desc: str = "embedding",
    ) -> Embedded:
        """Descriptors (n, dim) float32 of the readable `paths`, in their order; unreadable ones in `failed`."""
        paths = list(paths)
        loader = DataLoader(
            _Files(paths, self.transform, self.draft_size),
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=_collate,
        )
        kept: list[int] = []
        parts: list[np.ndarray] = []
        failed: list[tuple[Path, str]] = []
        with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
            for batch in loader:
                if batch["index"]:
                    parts.append(self.extractor.embed(batch["views"]).astype(np.float32))
                    kept += batch["index"]
                failed += [(paths[i], reason) for i, reason in batch["failed"]]
                bar.update(len(batch["index"]) + len(batch["failed"]))
        vectors = np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)
        check_finite(vectors, desc, FLOAT32_FIX if self.extractor.precision == "32" else EXTRACTION_FIX)
        return Embedded([paths[i] for i in kept], vectors, failed)
