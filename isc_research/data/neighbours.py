"""Neighbour lists of the training images, for batches of mutually similar images (hard negatives).

The "separate" retriever (matching track 2nd, RECIPES §6) trains on batches that are each one training image's
nearest training images: its preprocessing extracts descriptors of all training images with the model it starts
from (timm's ImageNet ViT-L/16 with its fresh 256-d projection; `preprocess.sh`, `eval.py`), keeps each image's
256 most similar images by cosine (`make_train_sim.py --n_perquery 256`), and both training stages read that one
file. Here: `neighbour_lists` is the nearest-neighbour step (exact, isc_research.search), `compute_neighbour_lists` runs
it on the initial model's descriptors (isc_research.extract, resumable), and `isc_research.data.sampling.EpochSampler`
turns the
lists into batches. A row is a training image's neighbours, nearest first (itself first unless an identical
image has a lower index)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from isc_research.data.records import ImageRecord

log = logging.getLogger(__name__)


def neighbour_lists(descriptors: np.ndarray, k: int, device: str | None = None) -> np.ndarray:
    """(n, k) int32: for each row of the L2-normalised `descriptors`, the rows of its k most similar descriptors
    (inner product, itself included), most similar first; ties: lower row first."""
    from isc_research.search import knn_rows

    if not 1 <= k <= len(descriptors):
        raise ValueError(f"data.neighbour_batches.k={k} must be between 1 and the {len(descriptors)} training images")
    _, rows = knn_rows(descriptors, descriptors, k=int(k), metric="ip", device=device)
    return rows.astype(np.int32)


def load_neighbour_lists(path: str | Path, n_images: int, batch: int) -> np.ndarray:
    """The lists of a `.npy` file, checked against the training set (one row per image, valid indices) and the
    batch they must fill (at least `batch` neighbours per row); an error names the file and what to do."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"data.neighbour_batches.neighbours={str(path)!r} does not exist; give the "
            "neighbours.npy of the run that computed them (e.g. stage 1's run folder), or null "
            "to compute them from this run's initial model"
        )
    lists = np.load(path, mmap_mode="r", allow_pickle=False)  # DISC21: 1M × 256 int32 = 1 GB, shared by the processes
    if lists.ndim != 2 or not np.issubdtype(lists.dtype, np.integer):
        raise ValueError(f"{path}: expected an (images × neighbours) integer array, got {lists.dtype} {lists.shape}")
    if len(lists) != n_images:
        raise ValueError(
            f"{path}: {len(lists)} rows, but the training set has {n_images} images; the lists belong "
            "to another training set (dataset.max_training / training_every differ?)"
        )
    if lists.shape[1] < batch:
        raise ValueError(
            f"{path}: {lists.shape[1]} neighbours per image cannot fill a batch of {batch} "
            "(data.batch_size × processes); compute longer lists (data.neighbour_batches.k) or use a "
            "smaller batch"
        )
    if lists.size and (lists.min() < 0 or lists.max() >= n_images):
        raise ValueError(f"{path}: neighbour indices outside the {n_images} training images")
    return lists


def save_neighbour_lists(lists: np.ndarray, path: Path) -> Path:
    """Write atomically (processes of a DDP run compute the same lists and may write at once)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, lists)
    os.replace(tmp, path)
    return path


def compute_neighbour_lists(
    model: torch.nn.Module,
    records: Sequence[ImageRecord],
    size: int,
    k: int,
    folder: Path,
    *,
    device: str = "cpu",
    batch_size: int = 128,
    num_workers: int = 0,
    draft_size: int | None = None,
) -> np.ndarray:
    """Neighbour lists from `model`'s descriptors of `records` (square resize to `size`, no test-time
    augmentation), extracted to `folder`/neighbour_descriptors.h5 (resumed if interrupted) and written to
    `folder`/neighbours.npy. An unreadable training image is an error naming it: the lists index every image."""
    from isc_research.extract import EvalTransform, ModelExtractor, extract_to_hdf5, read_descriptors

    modes = [(m, m.training) for m in model.modules()]  # ModelExtractor puts the model in eval mode
    extractor = ModelExtractor(
        model, EvalTransform(int(size), "square"), device=torch.device(device), name="neighbours"
    )
    try:
        h5 = extract_to_hdf5(
            extractor,
            records,
            folder / "neighbour_descriptors.h5",
            batch_size=batch_size,
            num_workers=num_workers,
            draft_size=draft_size,
            desc="training descriptors (neighbour lists)",
        )
    finally:
        for module, training in modes:
            module.training = training
    ids, vectors = read_descriptors(h5)
    if list(ids) != [r.id for r in records]:
        raise RuntimeError(f"{h5}: its images are not the training images in order; delete it and rerun")
    lists = neighbour_lists(vectors, k, device=device)
    save_neighbour_lists(lists, folder / "neighbours.npy")
    log.info("neighbour lists: %d training images × %d neighbours → %s", *lists.shape, folder / "neighbours.npy")
    return lists
