"""LightningDataModule: training views of the training split (or ground-truth pairs), optional extra
negatives; queries + references for validation."""

from __future__ import annotations

from typing import Callable

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset

from isc_research.data.datasets import EvalImages, ExtraNegatives, GroundTruthPairs, TrainingViews, collate_skipping
from isc_research.data.disc import (
    DiscData,
    hold_out_training_pairs,
    load_disc,
    load_extra_classes,
    load_training_pairs,
    resolve_root,
)
from isc_research.data.sampling import ClassStage, SeededSamples, epoch_sampler


class DiscDataModule(L.LightningDataModule):
    def __init__(
        self,
        dataset,  # the `dataset` config node (see conf/dataset/)
        train_transform: Callable,
        eval_transform: Callable,
        batch_size: int = 64,
        eval_batch_size: int = 128,
        num_workers: int = 0,
        n_views: int = 2,
        draft_size: int | None = None,
        skip_bad_eval_images: bool = False,
        extra_negatives: int = 0,
        gt_pairs=None,  # the `data.gt_pairs` config node, or None
        plain_transform: Callable | None = None,  # extra negatives and ground-truth pairs (no augmentation)
        seed: int = 0,
        steps_per_epoch: int | None = None,  # fixed epoch length in optimiser steps (None: one pass over the set)
        first_anchor: int | None = None,  # neighbour batches: anchors in order from this training index (else seeded)
        extra_classes=None,  # the `data.extra_classes` node {root, count}: more images, each its own class
        policy: Callable | None = None,  # the augmentation config as a partial: policy(intensity=…) (drip stages)
        shared_augmentation_draws: bool = False,  # one set of Python/torch augmentation draws per global batch
    ):
        super().__init__()
        self.dataset_cfg = dataset
        self.train_transform = train_transform
        self.eval_transform = eval_transform
        self.plain_transform = plain_transform or eval_transform
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.n_views = n_views
        self.draft_size = draft_size
        self.skip_bad_eval_images = skip_bad_eval_images
        if extra_negatives < 0:
            raise ValueError(f"data.extra_negatives must be >= 0, got {extra_negatives}")
        self.extra_negatives = extra_negatives
        self.gt_pairs = gt_pairs if gt_pairs is not None and gt_pairs.get("enabled") else None
        self.seed = seed
        self.steps_per_epoch = steps_per_epoch
        self.extra_classes_cfg = extra_classes
        self.policy = policy
        self.extra_classes: list = []
        self.data: DiscData | None = None
        self.train_pairs = None
        # Set by isc_research.callbacks.ArcFaceDrip before the loaders are built: the epoch's classes and augmentation
        # intensity (read when each epoch's sampler starts); None = every image, as configured.
        self.class_stage: Callable[[], ClassStage] | None = None
        # Set by isc-train (data.neighbour_batches) before the loaders are built: per training image its most
        # similar training images (isc_research.data.neighbours); each global batch is then one image's neighbours.
        self.neighbours: np.ndarray | None = None
        self.first_anchor = first_anchor
        self.shared_augmentation_draws = shared_augmentation_draws

    def prepare_data(self) -> None:
        resolve_root(self.dataset_cfg)  # builds the mini-DISC once, on one process

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        data = load_disc(self.dataset_cfg)
        if self.gt_pairs is not None:
            if self.gt_pairs.ground_truth:
                query_dir = self.gt_pairs.query_dir or self.dataset_cfg.query_dir
                self.train_pairs = load_training_pairs(data, self.gt_pairs.ground_truth, query_dir)
            else:
                self.train_pairs, data = hold_out_training_pairs(data, self.gt_pairs.train_fraction, self.seed)
        self.extra_classes = load_extra_classes(self.extra_classes_cfg, self.seed)
        if self.extra_classes and self.train_pairs is not None:
            raise ValueError(
                "data.extra_classes adds instance classes to the training images; it cannot be combined "
                "with data.gt_pairs.enabled=true (set data.extra_classes.count=0)"
            )
        self.data = data

    @property
    def num_train_labels(self) -> int:
        """Instance classes of the training set: training images (+ data.extra_classes), or ground-truth pairs."""
        if self.train_pairs is not None:
            return len(self.train_pairs)
        return len(self.data.training) + len(self.extra_classes)

    @property
    def val_records(self):
        """Queries then references: the order of the validation dataset and of its `index` field."""
        return self.data.queries + self.data.references

    def _loader(self, dataset, batch_size: int, shuffle: bool, drop_last: bool, sampler=None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_skipping,
        )

    def train_dataset(self) -> Dataset:
        if self.train_pairs is not None:
            dataset: Dataset = GroundTruthPairs(self.train_pairs, self.plain_transform, self.draft_size)
            matched = {reference.id for _, reference in self.train_pairs}
            pool = [r for r in self.data.references if r.id not in matched]  # non-GT references (stage 4)
        else:
            dataset = TrainingViews(
                self.data.training,
                self.train_transform,
                self.n_views,
                self.draft_size,
                extra=self.extra_classes,
                policy=self.policy,
            )
            pool = self.data.references
        if self.extra_negatives:
            dataset = ExtraNegatives(
                dataset,
                pool,
                self.extra_negatives,
                self.plain_transform,
                label_offset=len(dataset),
                draft_size=self.draft_size,
            )
        return dataset

    def batches_per_epoch(self, world_size: int = 1) -> int:
        """Training batches per process and epoch (full global batches only, as EpochSampler draws them)."""
        if self.steps_per_epoch:
            return self.steps_per_epoch
        return len(self.train_dataset()) // (self.batch_size * world_size)

    def train_dataloader(self) -> DataLoader:
        """Order and augmentations depend on (seed, epoch, sample) only (see isc_research.data.sampling): a resumed run
        replays them, and under DDP each step's global batch is one process's batch. A drip stage's own
        `batch_size` replaces data.batch_size while it lasts."""
        dataset = self.train_dataset()
        if self.neighbours is not None and self.train_pairs is not None:
            raise ValueError(
                "data.neighbour_batches groups training images; it does not combine with data.gt_pairs "
                "(training on ground-truth pairs)"
            )
        stage = self.class_stage() if self.class_stage is not None else None
        batch_size = stage.batch_size if stage is not None and stage.batch_size else self.batch_size
        if len(dataset) < batch_size:
            raise ValueError(f"data.batch_size={batch_size} is larger than the {len(dataset)} training samples.")
        sampler = epoch_sampler(
            getattr(self, "trainer", None),
            len(dataset),
            batch_size,
            self.seed,
            stage=self.class_stage,
            steps=self.steps_per_epoch,
            groups=self.neighbours,
            first_anchor=self.first_anchor,
            shared_draws=self.shared_augmentation_draws,
        )
        return self._loader(
            SeededSamples(dataset, self.seed), batch_size, shuffle=False, drop_last=True, sampler=sampler
        )

    def val_dataloader(self) -> DataLoader:
        dataset = EvalImages(self.val_records, self.eval_transform, self.skip_bad_eval_images, self.draft_size)
        return self._loader(dataset, self.eval_batch_size, shuffle=False, drop_last=False)


class SeededDataModule(L.LightningDataModule):
    """A training set drawn as DiscDataModule draws isc-train's (isc_research.data.sampling: each epoch's order and
    every
    random draw of a sample depend on (seed, epoch, sample) only, so a resumed run replays them and under DDP each
    step's global batch is one process's batch), and a validation set (Lightning shares it out among the
    processes): the data of isc-train-verifier and isc-train-detector."""

    def __init__(
        self,
        train: Dataset,
        validation: Dataset,
        batch_size: int,
        eval_batch_size: int,
        num_workers: int,
        seed: int,
        train_collate: Callable | None = None,
        val_collate: Callable | None = None,
    ):
        super().__init__()
        self.train, self.validation, self.seed = train, validation, int(seed)
        self.batch_size, self.eval_batch_size, self.num_workers = (
            int(batch_size),
            int(eval_batch_size),
            int(num_workers),
        )
        self.train_collate, self.val_collate = train_collate, val_collate

    def _loader(self, dataset: Dataset, batch_size: int, **options) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            **options,
        )

    def train_dataloader(self) -> DataLoader:
        sampler = epoch_sampler(getattr(self, "trainer", None), len(self.train), self.batch_size, self.seed)
        return self._loader(
            SeededSamples(self.train, self.seed),
            self.batch_size,
            sampler=sampler,
            drop_last=True,
            collate_fn=self.train_collate,
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.validation, self.eval_batch_size, collate_fn=self.val_collate)
