"""Validation-end retrieval evaluation with the ISC2021 metric, correct under DDP."""

from __future__ import annotations

import logging

import lightning as L
import numpy as np
import torch

from isc_research.distributed import gather_uneven
from isc_research.finite import TRAINING_FIX, check_finite
from isc_research.metric import EVALUATION_METRICS, Metrics, Predictions, evaluate
from isc_research.search import CANDIDATE_RULES, candidates as search_candidates

log = logging.getLogger(__name__)


class RetrievalEvaluation(L.Callback):
    """Embeds the validation queries and references, generates candidates and logs µAP & co.

    Every rank gathers all embeddings, drops the duplicates that a padding DistributedSampler adds (by
    record index) and computes the same metrics, so `val/uAP` exists on every rank and can be monitored.
    """

    def __init__(
        self,
        candidates: str = "global",
        k: int = 10,
        results_per_query: int = 10,
        prefix: str = "val",
        search_device: str = "auto",
    ):
        if candidates not in CANDIDATE_RULES:
            raise ValueError(f"candidates must be 'global' (official ISC rule) or 'knn', got {candidates!r}")
        self.candidates = candidates
        self.k = k
        self.results_per_query = results_per_query
        self.prefix = prefix
        self.search_device = search_device  # isc_research.search: auto | cpu | cuda
        self.last_metrics: Metrics | None = None
        self.last_predictions: Predictions | None = None
        self.scored_at_step: int | None = None  # trainer.global_step of the last evaluation
        self._reset()

    def _reset(self) -> None:
        self._embeddings: list[torch.Tensor] = []
        self._indices: list[torch.Tensor] = []
        self._skipped = 0

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.sanity_checking:
            return
        self._embeddings.append(outputs["embeddings"].detach().float())
        self._indices.append(outputs["index"].detach())
        self._skipped += int(outputs["skipped"])

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not self._embeddings:
            return
        embeddings = gather_uneven(torch.cat(self._embeddings)).cpu().numpy()
        indices = gather_uneven(torch.cat(self._indices)).cpu().numpy()
        skipped = int(gather_uneven(torch.tensor([self._skipped], device=pl_module.device)).sum())
        self._reset()
        indices, first = np.unique(indices, return_index=True)  # drop sampler padding
        embeddings = embeddings[first]
        metrics, predictions = self.score(trainer.datamodule, indices, embeddings, skipped)
        self.last_metrics, self.last_predictions = metrics, predictions
        self.scored_at_step = trainer.global_step
        # DrivenData's convention: recall_at_p90 0 when precision never reaches 0.9 (the JSON files keep null)
        values = {k: getattr(metrics, k) or 0.0 for k in EVALUATION_METRICS if k != "uAP"}
        pl_module.log(f"{self.prefix}/uAP", float(metrics.uAP), prog_bar=True, sync_dist=False)
        pl_module.log_dict({f"{self.prefix}/{k}": float(v) for k, v in values.items()}, sync_dist=False)

    def score(
        self, datamodule, indices: np.ndarray, embeddings: np.ndarray, skipped: int
    ) -> tuple[Metrics, Predictions]:
        records = datamodule.val_records
        n_queries = len(datamodule.data.queries)
        gt = datamodule.data.ground_truth
        is_query = indices < n_queries
        query_ids = np.array([records[i].id for i in indices[is_query]], dtype=object)
        reference_ids = np.array([records[i].id for i in indices[~is_query]], dtype=object)
        expected = len(records)
        if len(indices) + skipped < expected:
            log.warning(
                "validation saw %d of %d images (limit_val_batches?): µAP is over that part only",
                len(indices),
                expected,
            )
        if skipped:
            log.warning("%d unreadable validation images were skipped", skipped)
        if len(indices) + skipped < expected and len(query_ids) < len(gt.query_ids):
            # a partial validation (limit_val_batches) scores the queries it saw; an unreadable query stays in the
            # ground truth, so its pairs are misses as in the official scorer (skipping never raises the µAP)
            gt = gt.restricted(query_ids.tolist())
        check_finite(embeddings[is_query], "validation queries", TRAINING_FIX)  # before the search (issue 15)
        check_finite(embeddings[~is_query], "validation references", TRAINING_FIX)
        predictions = search_candidates(
            self.candidates,
            embeddings[is_query],
            embeddings[~is_query],
            query_ids,
            reference_ids,
            results_per_query=self.results_per_query,
            k=self.k,
            device=self.search_device,
        )
        return evaluate(gt, predictions), predictions
