"""Figures of each in-loop evaluation for the experiment trackers: the precision–recall curve of the pooled
predictions (the curve whose area is µAP) and a grid of example matches (query | top reference)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import lightning as L
import numpy as np
from PIL import Image

from isc.callbacks.retrieval import RetrievalEvaluation
from isc.images import load_image
from isc.metric import GroundTruth, Predictions, precision_recall

log = logging.getLogger(__name__)


def _restricted(gt: GroundTruth, predictions: Predictions) -> GroundTruth:
    """The ground truth of the queries that were evaluated (all of them, unless validation was limited)."""
    seen = set(predictions.query_ids.tolist())
    if seen >= set(gt.query_ids):
        return gt
    return GroundTruth.from_pairs([q for q in gt.query_ids if q in seen], {q: r for q, r in gt.matches.items() if q in seen})


def _to_array(figure) -> np.ndarray:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return np.asarray(Image.open(buffer).convert("RGB"))


def pr_curve_image(gt: GroundTruth, predictions: Predictions, uap: float) -> np.ndarray:
    """Precision against recall over the predictions sorted by score (ISC2021's pessimistic tie order)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    precision, recall, _ = precision_recall(gt, predictions)
    figure, axes = plt.subplots(figsize=(4, 3.5))
    axes.plot(recall, precision, lw=1.5)
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=f"µAP {uap:.4f}")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return _to_array(figure)


def example_matches_image(gt: GroundTruth, predictions: Predictions, paths: dict[str, Path], n: int = 8,
                          size: int = 96) -> np.ndarray:
    """The `n` highest-scoring pairs, one row each: query | reference, framed green (a true match) or red."""
    order = np.argsort(-predictions.scores, kind="stable")[:n]
    rows = []
    for i in order:
        q, r = str(predictions.query_ids[i]), str(predictions.reference_ids[i])
        colour = (40, 170, 60) if gt.matches.get(q) == r else (210, 40, 40)
        row = Image.new("RGB", (2 * size + 12, size + 8), colour)
        for j, image_id in enumerate((q, r)):
            row.paste(load_image(paths[image_id]).resize((size, size)), (4 + j * (size + 4), 4))
        rows.append(np.asarray(row))
    return np.concatenate(rows, axis=0) if rows else np.zeros((size, 2 * size, 3), dtype=np.uint8)


class RetrievalFigures(L.Callback):
    """After every in-loop evaluation (on rank 0): the PR curve and `n_examples` top-scoring pairs, written as
    PNG files to `<output_dir>/figures/` and sent to the TensorBoard and W&B loggers as images."""

    def __init__(self, output_dir: str | Path, n_examples: int = 8):
        self.output_dir = Path(output_dir) / "figures"
        self.n_examples = n_examples

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        # runs after RetrievalEvaluation's hook (callbacks run in list order; isc.train puts this one last)
        evaluation = next((c for c in trainer.callbacks if isinstance(c, RetrievalEvaluation)), None)
        if trainer.sanity_checking or not trainer.is_global_zero or evaluation is None or evaluation.last_predictions is None \
                or evaluation.scored_at_step != trainer.global_step:
            return
        datamodule = trainer.datamodule
        predictions = evaluation.last_predictions
        gt = _restricted(datamodule.data.ground_truth, predictions)
        paths = {record.id: record.path for record in datamodule.val_records}
        images = {f"{evaluation.prefix}/pr_curve": pr_curve_image(gt, predictions, evaluation.last_metrics.uAP),
                  f"{evaluation.prefix}/example_matches": example_matches_image(gt, predictions, paths, self.n_examples)}
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for name, array in images.items():
            Image.fromarray(array).save(self.output_dir / f"{name.replace('/', '_')}_step{trainer.global_step:06d}.png")
            for logger in trainer.loggers:
                log_image(logger, name, array, trainer.global_step)


def log_image(logger, name: str, array: np.ndarray, step: int) -> None:
    """One HWC uint8 image to a TensorBoard or W&B logger (other loggers have no image support: skipped)."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    if isinstance(logger, TensorBoardLogger):
        logger.experiment.add_image(name, array, step, dataformats="HWC")
    elif isinstance(logger, WandbLogger):
        logger.log_image(key=name, images=[array], step=step)
