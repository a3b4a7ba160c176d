"""Figures of each in-loop evaluation for the experiment trackers: the precision–recall curve of the pooled
predictions (the curve whose area is µAP) and the hardest pairs (the most confident false positives and the
hardest missed matches, with their ids and similarities): what training still gets wrong."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
from PIL import Image

from isc_research.callbacks.retrieval import RetrievalEvaluation
from isc_research.images import load_image
from isc_research.analysis import false_positives, missed_matches
from isc_research.metric import GroundTruth, Predictions, precision_recall
from isc_research.report import pr_curve_figure
from isc_research.summary import similarity

log = logging.getLogger(__name__)


def pr_curve_image(gt: GroundTruth, predictions: Predictions, uap: float) -> np.ndarray:
    """Precision against recall over the predictions sorted by score (ISC2021's pessimistic tie order), as an
    RGB array (isc_research.report's figure; no pyplot, so the caller's matplotlib backend is left alone)."""
    precision, recall, _ = precision_recall(gt, predictions)
    buffer = io.BytesIO()
    pr_curve_figure(precision, recall, f"µAP {uap:.4f}", figsize=(4, 3.5)).savefig(buffer, format="png")
    return np.asarray(Image.open(buffer).convert("RGB"))


@dataclass(frozen=True)
class HardPair:
    """A row of the hardest-pairs strip: a false positive (query, predicted reference) or a missed match
    (query, its true reference); similarity None and rank None when the true pair is not among the predictions."""

    kind: str  # "false positive" | "missed"
    query_id: str
    reference_id: str
    similarity: float | None
    rank: int | None  # false positive: rank in the pooled list; missed: rank within its query


def hardest_pairs(gt: GroundTruth, predictions: Predictions, n: int = 8) -> list[HardPair]:
    """What the model gets most wrong: the ⌈n/2⌉ most confident false positives (pooled order), then the ⌊n/2⌋
    hardest missed matches (absent first, then outranked or lowest-scored; isc_research.analysis), scores as
    similarities
    (the in-loop evaluation searches by squared L2)."""
    fps = false_positives(gt, predictions, (n + 1) // 2)
    missed = missed_matches(gt, predictions, n // 2)
    return [HardPair("false positive", f.query_id, f.reference_id, similarity(f.score), f.rank) for f in fps] + [
        HardPair("missed", m.query_id, m.reference_id, similarity(m.score), m.rank_in_query) for m in missed
    ]


FRAME = {"false positive": (210, 40, 40), "missed": (230, 140, 20)}
CAPTION_WIDTH = 150


def _caption(pair: HardPair) -> list[str]:
    if pair.similarity is None:
        return [pair.kind, f"query {pair.query_id}", f"ref {pair.reference_id}", "not predicted"]
    where = f"rank {pair.rank} overall" if pair.kind == "false positive" else f"rank {pair.rank} in its query"
    return [pair.kind, f"query {pair.query_id}", f"ref {pair.reference_id}", f"similarity {pair.similarity:.4f}", where]


def hardest_pairs_image(pairs: list[HardPair], paths: dict[str, Path], size: int = 96) -> np.ndarray:
    """One row per pair: query | reference | caption (kind, ids, similarity and rank), framed red for a false
    positive and orange for a missed match."""
    from PIL import ImageDraw

    rows = []
    for pair in pairs:
        row = Image.new("RGB", (2 * size + 12 + CAPTION_WIDTH, size + 8), FRAME[pair.kind])
        for j, image_id in enumerate((pair.query_id, pair.reference_id)):
            row.paste(load_image(paths[image_id]).resize((size, size)), (4 + j * (size + 4), 4))
        panel = Image.new("RGB", (CAPTION_WIDTH - 4, size), (255, 255, 255))
        draw = ImageDraw.Draw(panel)
        for k, text in enumerate(_caption(pair)):
            draw.text((4, 4 + 14 * k), text, fill=(20, 20, 20))
        row.paste(panel, (2 * size + 12, 4))
        rows.append(np.asarray(row))
    return (
        np.concatenate(rows, axis=0) if rows else np.full((size, 2 * size + 12 + CAPTION_WIDTH, 3), 255, dtype=np.uint8)
    )


def figure_label(trainer) -> str:
    """Figures are named like checkpoints, by the epoch whose weights were scored: `init` before training,
    `epoch003` after the 4th epoch (during fit, current_epoch is that epoch; in the validation isc-train runs
    after fit, current_epoch has moved past the last one)."""
    if trainer.global_step == 0:
        return "init"
    fitting = trainer.state.fn == "fit"
    return f"epoch{trainer.current_epoch - (0 if fitting else 1):03d}"


class RetrievalFigures(L.Callback):
    """After every in-loop evaluation (on rank 0): the PR curve and the `n_examples` hardest pairs (false
    positives and missed matches, with ids and similarities), written as PNG files to `<output_dir>/figures/`
    named by epoch (`val_pr_curve_epoch003.png`, `…_init.png` before training), and sent to the TensorBoard and
    W&B loggers as images."""

    def __init__(self, output_dir: str | Path, n_examples: int = 8):
        self.output_dir = Path(output_dir) / "figures"
        self.n_examples = n_examples

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        # runs after RetrievalEvaluation's hook (callbacks run in list order; isc_research.train puts this one last)
        evaluation = next((c for c in trainer.callbacks if isinstance(c, RetrievalEvaluation)), None)
        if (
            trainer.sanity_checking
            or not trainer.is_global_zero
            or evaluation is None
            or evaluation.last_predictions is None
            or evaluation.scored_at_step != trainer.global_step
        ):
            return
        datamodule = trainer.datamodule
        predictions = evaluation.last_predictions
        # the queries that were evaluated (all of them, unless validation was limited)
        gt = datamodule.data.ground_truth.restricted(predictions.query_ids.tolist())
        paths = {record.id: record.path for record in datamodule.val_records}
        pairs = hardest_pairs(gt, predictions, self.n_examples)
        images = {
            f"{evaluation.prefix}/pr_curve": pr_curve_image(gt, predictions, evaluation.last_metrics.uAP),
            f"{evaluation.prefix}/hardest_pairs": hardest_pairs_image(pairs, paths),
        }
        self.output_dir.mkdir(parents=True, exist_ok=True)
        label = figure_label(trainer)
        for name, array in images.items():
            Image.fromarray(array).save(self.output_dir / f"{name.replace('/', '_')}_{label}.png")
            for logger in trainer.loggers:
                log_image(logger, name, array, trainer.global_step)


def log_image(logger, name: str, array: np.ndarray, step: int) -> None:
    """One HWC uint8 image to a TensorBoard or W&B logger (other loggers have no image support: skipped)."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    if isinstance(logger, TensorBoardLogger):
        logger.experiment.add_image(name, array, step, dataformats="HWC")
    elif isinstance(logger, WandbLogger):
        logger.log_image(key=name, images=[array], step=step)
