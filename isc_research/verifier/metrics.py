"""Verification metrics over scored (query, candidate) pairs: accuracy, ROC AUC and the ISC µAP."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from isc_research.metric import GroundTruth, Predictions, evaluate
from isc_research.verifier.pairs import ValidationPairs


def pair_metrics(pairs: ValidationPairs, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float | None]:
    """`accuracy` (score > threshold ⇔ copy), `auc` (None when one class is absent), and `uAP`: the official
    µAP (isc_research.metric) of the pairs as predictions against the validation ground truth (recall denominator:
    every true pair of the validation queries), plus the counts."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != pairs.labels.shape:
        raise ValueError(f"{len(scores)} scores for {len(pairs)} validation pairs")
    labels = pairs.labels
    both = 0 < labels.sum() < len(labels)
    predictions = Predictions(
        np.array([q.id for q in pairs.queries], dtype=str),
        np.array([r.id for r in pairs.references], dtype=str),
        scores,
    )
    gt = GroundTruth.from_pairs(pairs.query_ids, pairs.matches)
    return {
        "accuracy": float(np.mean((scores > threshold) == (labels == 1))),
        "auc": float(roc_auc_score(labels, scores)) if both else None,
        "uAP": evaluate(gt, predictions).uAP if len(scores) else 0.0,
        "positives": float(labels.sum()),
        "pairs": float(len(labels)),
    }
