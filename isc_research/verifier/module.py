"""LightningModule: trains a PairClassifier with binary cross-entropy on side-by-side pairs (RECIPES §6)."""

from __future__ import annotations

from typing import Callable

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from isc_research.distributed import gather_uneven
from isc_research.optim import optimization
from isc_research.verifier.metrics import pair_metrics
from isc_research.verifier.model import PairClassifier
from isc_research.verifier.pairs import ValidationPairs


def bce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of copy logits against 0/1 labels ("separate"'s verifier loss, RECIPES §6)."""
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


class VerifierModule(L.LightningModule):
    """`model`: PairClassifier's arguments; `pair_size`: side of the square pair image; both, with the resolved
    run `config`, travel in the checkpoint so that PairwiseVerifier.from_checkpoint needs nothing else.
    `validation` (set before fitting): the pairs that validation batches index into."""

    def __init__(
        self,
        model: dict,
        pair_size: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
        config: dict | None = None,
    ):
        super().__init__()
        self.save_hyperparameters({"model": dict(model), "pair_size": int(pair_size), "config": config or {}})
        self.model = PairClassifier(**model)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.scheduler_interval = scheduler_interval
        self.validation: ValidationPairs | None = None
        self._scores: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.last_metrics: dict[str, float | None] | None = None
        self.scored_at_step: int | None = None  # global step of last_metrics

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        return self.model(pairs)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        self.log("train/skipped_pairs", float(batch["skipped"]), on_step=False, on_epoch=True, reduce_fx="sum")
        if "pairs" not in batch:  # every anchor of the batch was unreadable
            return None
        pairs, labels = batch["pairs"].flatten(0, 1), batch["labels"].flatten()
        logits = self.model(pairs)
        loss = bce_loss(logits, labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} at global step {self.global_step}")
        accuracy = ((logits > 0) == (labels > 0.5)).float().mean()
        n = batch["pairs"].shape[0]
        # under DDP each process's loss is its share's: logged as the mean over processes, the global batch's loss
        self.log_dict(
            {"train/loss": loss.detach(), "train/accuracy": accuracy}, prog_bar=True, batch_size=n, sync_dist=True
        )
        self.log("train/epoch_loss", loss.detach(), on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._scores = []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._scores.append((batch["index"].cpu(), torch.sigmoid(self.model(batch["pair"]).float()).cpu()))

    def on_validation_epoch_end(self) -> None:
        if self.validation is None:
            raise RuntimeError("VerifierModule.validation is not set: give it the ValidationPairs before validating")
        if self.trainer.sanity_checking:
            return
        # every process scores its share of the pairs (DistributedSampler under DDP): gather all of them, so that
        # every process computes the metrics of all pairs (a pair scored twice, the sampler's padding, has one
        # index and the same score both times)
        index = (
            gather_uneven(torch.cat([i for i, _ in self._scores] or [torch.zeros(0, dtype=torch.long)]).to(self.device))
            .cpu()
            .numpy()
        )
        values = gather_uneven(torch.cat([s for _, s in self._scores] or [torch.zeros(0)]).to(self.device)).cpu()
        scores = np.full(len(self.validation), np.nan)
        scores[index] = values.numpy()
        if np.isnan(scores).any():
            raise RuntimeError(
                f"validation scored {len(index)} of {len(self.validation)} pairs "
                "(limit_val_batches below 1.0?); the metrics need every pair"
            )
        self.last_metrics = pair_metrics(self.validation, scores)
        self.scored_at_step = self.global_step
        self.log_dict(
            {f"val/{k}": float("nan") if v is None else v for k, v in self.last_metrics.items()}, sync_dist=False
        )  # every process computed them from all pairs

    def configure_optimizers(self):
        return optimization(
            self,
            self.optimizer_factory,
            self.scheduler_factory,
            self.scheduler_interval,
            self.trainer.estimated_stepping_batches,
        )
