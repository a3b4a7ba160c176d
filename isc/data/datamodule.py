"""LightningDataModule: training views of the training split; queries + references for validation."""

from __future__ import annotations

from typing import Callable

import lightning as L
from torch.utils.data import DataLoader

from isc.data.datasets import EvalImages, TrainingViews, collate_skipping
from isc.data.disc import DiscData, load_disc, resolve_root


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
    ):
        super().__init__()
        self.dataset_cfg = dataset
        self.train_transform = train_transform
        self.eval_transform = eval_transform
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.n_views = n_views
        self.draft_size = draft_size
        self.skip_bad_eval_images = skip_bad_eval_images
        self.data: DiscData | None = None

    def prepare_data(self) -> None:
        resolve_root(self.dataset_cfg)  # builds the mini-DISC once, on one process

    def setup(self, stage: str | None = None) -> None:
        if self.data is None:
            self.data = load_disc(self.dataset_cfg)

    @property
    def val_records(self):
        """Queries then references: the order of the validation dataset and of its `index` field."""
        return self.data.queries + self.data.references

    def _loader(self, dataset, batch_size: int, shuffle: bool, drop_last: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_skipping,
        )

    def train_dataloader(self) -> DataLoader:
        if len(self.data.training) < self.batch_size:
            raise ValueError(
                f"data.batch_size={self.batch_size} is larger than the {len(self.data.training)} training images."
            )
        dataset = TrainingViews(self.data.training, self.train_transform, self.n_views, self.draft_size)
        return self._loader(dataset, self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        dataset = EvalImages(self.val_records, self.eval_transform, self.skip_bad_eval_images, self.draft_size)
        return self._loader(dataset, self.eval_batch_size, shuffle=False, drop_last=False)
