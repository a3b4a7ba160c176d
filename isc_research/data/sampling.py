"""Training order and augmentation draws that depend on (seed, epoch, sample) only.

A run resumed from an epoch-end checkpoint replays the next epoch exactly (same order, same augmentations,
whatever the number of data workers), and under DDP every optimiser step sees the same global batch, with the
same augmented views, as one process would.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler


def sample_seed(seed: int, epoch: int, index: int, *more: int) -> int:
    """A 63-bit seed for one (seed, epoch, sample, …) tuple (numpy's SeedSequence mixes them)."""
    return int(
        np.random.SeedSequence([seed, epoch, index, *more])
        .generate_state(2, np.uint32)
        .astype(np.uint64)
        .dot(np.array([1 << 31, 1], dtype=np.uint64))
    )


@dataclass(frozen=True)
class ClassStage:
    """The classes and the augmentation intensity of a training epoch (ArcFace drip training, S-square,
    RECIPES §3.1): the first `classes` training images, then the first `extra` images of the extra class
    source (data.extra_classes), labelled by that position; `intensity`, when not None, replaces the
    augmentation policy's intensity. The sampler reads it when the epoch starts and hands it to the data
    workers with every sample, so persistent workers follow a stage change. `batch_size`, when not None,
    replaces data.batch_size (per process) in the stage's epochs; `own_epochs`: an epoch is one pass over the
    stage's classes (S-square ran each stage as a new trainer.py run), else as long as one over all samples,
    the stage's classes repeated. Both need the training loader rebuilt at the stage change (the drip does)."""

    classes: int
    extra: int = 0
    intensity: float | None = None
    batch_size: int | None = None
    own_epochs: bool = False

    @property
    def size(self) -> int:
        return self.classes + self.extra


class EpochSampler(DistributedSampler):
    """Each epoch a permutation drawn from (seed, epoch), cut into global batches of `batch_size` × `num_replicas`;
    rank r takes the r-th slice of every global batch, so the ranks' batches concatenated in rank order are
    exactly one process's batch. Incomplete global batches are dropped. `stage()` (ArcFace drip training, a
    `ClassStage`) keeps its `size` class positions, the permutation repeated to fill the epoch. `steps` fixes the
    epoch's length in
    optimiser steps instead of one pass over the samples (VisionForce's 8,000 iterations per epoch, RECIPES §4):
    fresh permutations are concatenated until the epoch is full, so an epoch may cover the set several times.
    Yields (epoch, index) pairs, or (epoch, position, stage) with a `stage`, which `SeededSamples` turns into
    the sample's random draws. With `shared_draws` it yields (epoch, index, stage or None, global batch number)
    and every sample of one global batch (on every rank) gets the same Python and torch draws (the "separate"
    retriever's reseeding per step, RECIPES §6).

    `groups` (neighbour lists, isc_research.data.neighbours: row i = sample i's most similar samples, nearest first)
    makes
    every global batch one anchor's first `global_batch` neighbours — batches of mutually similar images, whose
    negatives are hard (the "separate" retriever, RECIPES §6). The anchors are the epoch's permutation, or with
    `first_anchor` consecutive samples from that index on, continuing from one epoch to the next (the source's
    `sim_pt_start`: step t of the run trains on the group of image sim_pt_start + t). The rest is unchanged:
    the epoch's global order depends on (seed, epoch) only and each rank takes its slice of every global batch.

    A DistributedSampler subclass so that Lightning neither replaces nor wraps it under DDP. The epoch is read
    when an epoch's iteration starts, from `current_epoch()` if given (the trainer's epoch progress), else from
    `set_epoch`: a resumed run with data workers creates its first iterator (and the workers prefetch from it)
    before Lightning calls `set_epoch`, which then comes too late."""

    def __init__(
        self,
        length: int,
        batch_size: int,
        seed: int = 0,
        stage: Callable[[], ClassStage] | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        current_epoch: Callable[[], int] | None = None,
        steps: int | None = None,
        groups: np.ndarray | None = None,
        first_anchor: int | None = None,
        shared_draws: bool = False,
    ):
        if length < batch_size * num_replicas:
            raise ValueError(
                f"data.batch_size={batch_size} × {num_replicas} processes is larger than the {length} training samples"
            )
        if steps is not None and steps < 1:
            raise ValueError(f"data.steps_per_epoch must be a positive number of steps or null, got {steps}")
        if groups is not None:
            if groups.ndim != 2 or len(groups) != length or groups.shape[1] < batch_size * num_replicas:
                raise ValueError(
                    f"neighbour lists of shape {groups.shape} do not fit {length} samples in global "
                    f"batches of {batch_size} × {num_replicas}: one row per sample, at least a batch long"
                )
            if stage is not None:
                raise ValueError(
                    "neighbour batches (data.neighbour_batches) and ArcFace drip training both choose "
                    "the training images; use one of them"
                )
        if first_anchor is not None and not 0 <= first_anchor < length:
            raise ValueError(
                f"data.neighbour_batches.first_anchor={first_anchor} is not a training index (0 … {length - 1})"
            )
        self.length, self.batch_size, self.seed, self.stage, self.steps = length, batch_size, seed, stage, steps
        self.num_replicas, self.rank, self.epoch, self.current_epoch = num_replicas, rank, 0, current_epoch
        self.groups, self.first_anchor, self.shared_draws = groups, first_anchor, shared_draws

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.num_replicas

    @property
    def epoch_samples(self) -> int:
        """Samples of one epoch over all ranks: `steps` global batches, else the full global batches of one pass
        (over the stage's classes when the stage has its own epochs, at least one batch)."""
        if self.steps:
            return self.steps * self.global_batch
        stage = self.stage() if self.stage else None
        n = stage.size if stage is not None and stage.own_epochs else self.length
        # a stage of fewer classes than a global batch: one batch, its classes repeated (S-square's loader gave
        # one short batch; isc's global batches have one size)
        return max(n // self.global_batch, 1) * self.global_batch

    def __len__(self) -> int:
        return self.epoch_samples // self.num_replicas

    def _permutation(self, n: int, count: int) -> list[int]:
        """`count` indices < n: this epoch's seeded permutations of range(n), concatenated."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.cat([torch.randperm(n, generator=generator) for _ in range(math.ceil(count / n))])[:count].tolist()

    def order(self, n: int | None = None) -> list[int]:
        """This epoch's global order (all ranks) of the first `n` samples (all if None), full global batches only;
        with neighbour lists, the anchors' groups."""
        if self.groups is not None:
            batches = self.epoch_samples // self.global_batch
            if self.first_anchor is None:
                anchors = self._permutation(self.length, batches)
            else:
                anchors = [(self.first_anchor + self.epoch * batches + b) % self.length for b in range(batches)]
            return self.groups[anchors, : self.global_batch].reshape(-1).tolist()
        n = self.length if n is None else n
        if not 1 <= n <= self.length:
            raise ValueError(f"a training stage of {n} classes does not fit the {self.length} training samples")
        return self._permutation(n, self.epoch_samples)

    def __iter__(self):
        if self.current_epoch is not None:
            self.epoch = self.current_epoch()
        stage = self.stage() if self.stage else None
        order, b, g = self.order(stage.size if stage else None), self.batch_size, self.global_batch
        mine = [
            (start // g, i)
            for start in range(0, len(order), g)
            for i in order[start + self.rank * b : start + (self.rank + 1) * b]
        ]
        if self.shared_draws:
            return iter([(self.epoch, i, stage, batch) for batch, i in mine])
        return iter([(self.epoch, i, stage) for _, i in mine] if stage else [(self.epoch, i) for _, i in mine])


def epoch_sampler(trainer, length: int, batch_size: int, seed: int, **options) -> EpochSampler:
    """EpochSampler for the processes of a Lightning `trainer` (None: one process), reading the epoch from its fit
    loop (the value Lightning passes to set_epoch); `options`: EpochSampler's other arguments."""
    world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
    current = (lambda: trainer.fit_loop.epoch_progress.current.processed) if trainer is not None else None
    return EpochSampler(length, batch_size, seed, num_replicas=world, rank=rank, current_epoch=current, **options)


class SeededSamples(Dataset):
    """`dataset[index]` with torch's, numpy's and Python's RNGs seeded from (seed, epoch, index) first: the
    augmentations of a sample depend on nothing else (not the worker, the rank or the run's history). A key
    that carries the global batch number (`EpochSampler(shared_draws=True)`) seeds Python and torch from
    (seed, epoch, batch) instead, so all samples of that batch draw the same crop, flip, overlay and colour
    parameters; numpy stays per sample (in the "separate" retriever's source only the blur's numpy draw
    differs within a step, RECIPES §6)."""

    def __init__(self, dataset: Dataset, seed: int = 0):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int] | tuple[int, int, ClassStage] | tuple[int, int, ClassStage | None, int]):
        epoch, index, stage, batch = (*key, None, None)[:4]
        s = sample_seed(self.seed, epoch, index)
        np.random.seed(s % 2**32)
        if batch is not None:
            s = sample_seed(self.seed, epoch, batch, 1)  # the trailing 1 keeps batch seeds apart from sample seeds
        torch.default_generator.manual_seed(s)
        random.seed(s)
        return self.dataset[(index, stage) if stage is not None else index]
