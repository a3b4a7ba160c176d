"""LightningModule: trains a DescriptorModel with an instance-discrimination loss."""

from __future__ import annotations

import math
from typing import Callable

import lightning as L
import torch
from torch import nn

from isc_research.model import DescriptorModel
from isc_research.optim import optimization


def training_inputs(batch: dict, batch_mix: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B·V [+ B·K], 3, H, W) and labels of a training batch: the V views of each image share its label
    ((B,) instance ids); `batch_mix` (e.g. SSCD's mixup/CutMix) mixes the views and turns their labels into
    (B·V, 2) label sets; extra negatives (B, K, …) follow, unmixed, with their own labels (padded with -1)."""
    views = batch["views"]  # (B, V, 3, H, W)
    v = views.shape[1]
    images, labels = views.flatten(0, 1), batch["label"].repeat_interleave(v, dim=0)
    if batch_mix is not None:
        images, labels = batch_mix(images, labels)
    if "negatives" in batch:
        negative_labels = batch["negative_label"].flatten()
        if labels.ndim == 2:
            padded = negative_labels.new_full((len(negative_labels), labels.shape[1]), -1)
            padded[:, 0] = negative_labels
            negative_labels = padded
        images = torch.cat([images, batch["negatives"].flatten(0, 1)])
        labels = torch.cat([labels, negative_labels])
    return images, labels


def total_steps(trainer: L.Trainer) -> int:
    """Optimizer steps of the run (Lightning's estimated_stepping_batches, same rules). Computed from the data
    module's `batches_per_epoch()` when it has one: estimated_stepping_batches builds the training loader — and
    its workers prefetch the first epoch's batches — before a resumed run's epoch counter is restored, so that
    run would replay the first epoch's order instead of the next epoch's."""
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is None or not hasattr(datamodule, "batches_per_epoch"):
        return int(trainer.estimated_stepping_batches)
    batches = datamodule.batches_per_epoch(trainer.world_size)
    limit = trainer.limit_train_batches
    batches = min(batches, int(limit)) if isinstance(limit, int) else int(batches * limit)
    if trainer.max_epochs is None or trainer.max_epochs < 0:
        if trainer.max_steps < 0:
            raise ValueError("the learning-rate schedule needs trainer.max_epochs or trainer.max_steps")
        return trainer.max_steps
    steps = math.ceil(batches * trainer.max_epochs / trainer.accumulate_grad_batches)
    return min(steps, trainer.max_steps) if trainer.max_steps >= 0 else steps


class CopyDetectionModule(L.LightningModule):
    """`model` holds DescriptorModel's arguments (saved in the checkpoint so that isc-eval can rebuild it);
    `loss` follows isc_research.losses' calling convention; `optimizer`/`scheduler` are partials; `config` is the
    resolved run config, stored in the checkpoint."""

    def __init__(
        self,
        model: dict,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
        config: dict | None = None,
        batch_mix: Callable | None = None,
    ):
        super().__init__()
        # The resolved run config travels in the checkpoint: isc-eval needs nothing else.
        self.save_hyperparameters({"model": dict(model), "config": config or {}})
        self.model = DescriptorModel(**model)
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.batch_mix = batch_mix  # e.g. isc_research.augment.mixup.BatchMix (SSCD's mixup/CutMix), views only
        # No host-device synchronisation per step (on a GPU each one drains the queue of kernels): the step's loss
        # is logged as a device tensor (converted every log_every_n_steps, by the loggers and the progress bar,
        # never per step), its finiteness is checked
        # one step late, and unreadable images are counted on the host and logged once per epoch.
        self._unchecked_loss: tuple[torch.Tensor, int] | None = None
        self._skipped = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def _check_loss(self) -> None:
        """Raise if the last step's loss was not finite. Checked when the next step starts (the host then waits
        only for the previous forward pass, the GPU still has its backward queued) and at the end of every epoch,
        before checkpoints and validation: a non-finite loss stops training before anything saves its weights."""
        if self._unchecked_loss is not None:
            loss, step = self._unchecked_loss
            self._unchecked_loss = None
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss is {loss.item()} at global step {step}")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        self._check_loss()
        self._skipped += int(batch["skipped"])
        if "views" not in batch:  # every image of the batch was unreadable
            return None
        images, labels = training_inputs(batch, self.batch_mix)
        b = batch["views"].shape[0]
        # a loss on the model's intermediate features (VisionForce's heads) gets them all, else the descriptor
        out = self.loss(
            self.model.forward_parts(images) if getattr(self.loss, "wants_parts", False) else self.model(images), labels
        )
        self._unchecked_loss = (out["loss"].detach(), self.global_step)
        # not prog_bar: Lightning turns progress-bar metrics into numbers after every batch (a sync each step);
        # isc_research.trainer.LossProgressBar shows these when it refreshes
        self.log_dict({f"train/{k}": val.detach() for k, val in out.items()}, batch_size=b)
        self.log("train/epoch_loss", out["loss"].detach(), on_step=False, on_epoch=True, batch_size=b, sync_dist=True)
        return out["loss"]

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.trainer.is_last_batch:  # before the epoch's validation and checkpoints
            self._check_loss()

    def on_train_epoch_end(self) -> None:
        self._check_loss()
        self.log("train/skipped_images", float(self._skipped), reduce_fx="sum", sync_dist=True)
        self._skipped = 0

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        if "image" not in batch:
            return {
                "embeddings": torch.empty(0, self.model.embedding_dim, device=self.device),
                "index": torch.empty(0, dtype=torch.long, device=self.device),
                "skipped": batch["skipped"],
            }
        return {"embeddings": self.model(batch["image"]), "index": batch["index"], "skipped": batch["skipped"]}

    def on_train_epoch_start(self) -> None:
        if hasattr(self.loss, "set_epoch"):  # losses whose terms depend on the epoch (S-square's view weights)
            self.loss.set_epoch(self.current_epoch)

    def on_fit_start(self) -> None:
        if hasattr(self.loss, "schedule"):  # losses with a schedule in run fractions (XBM's memory start)
            self.loss.schedule(total_steps(self.trainer) * self.trainer.accumulate_grad_batches)

    def configure_optimizers(self):
        return optimization(
            self, self.optimizer_factory, self.scheduler_factory, self.scheduler_interval, total_steps(self.trainer)
        )
