"""Boxes: IoU, the detector's box recall, and the overlay boxes recorded in a mini-DISC's query_edits.csv."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from isc_research.analysis import read_query_edits

__all__ = ["Box", "box_iou", "box_recall", "read_overlay_boxes"]

Box = tuple[int, int, int, int]
Detection = tuple[Box, float]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes (0 when either is empty)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def box_recall(
    truth: Sequence[Box | None], detections: Sequence[Sequence[Detection]], *, min_confidence: float, iou: float = 0.5
) -> dict[str, float | int]:
    """Per image at most one true box (None: no pasted content) and its detections.

    Returns:
      recall: share of true boxes matched by a detection with confidence >= min_confidence and IoU >= iou;
      top1_recall: share whose highest-confidence detection (any confidence) has IoU >= iou;
      false_positive_rate: share of images without a true box that have a detection >= min_confidence;
      replaced_wrongly: share of images with a true box whose top detection is >= min_confidence but IoU < iou.
    """
    if len(truth) != len(detections):
        raise ValueError(f"{len(truth)} true boxes but {len(detections)} detection lists")
    n_pos = n_hit = n_top = n_neg = n_fp = n_wrong = 0
    for box, dets in zip(truth, detections):
        confident = [(b, c) for b, c in dets if c >= min_confidence]
        if box is None:
            n_neg += 1
            n_fp += bool(confident)
            continue
        n_pos += 1
        n_hit += any(box_iou(b, box) >= iou for b, _ in confident)
        if dets:
            top, conf = max(dets, key=lambda d: d[1])
            good = box_iou(top, box) >= iou
            n_top += good
            n_wrong += conf >= min_confidence and not good
    return {
        "recall": n_hit / n_pos if n_pos else float("nan"),
        "top1_recall": n_top / n_pos if n_pos else float("nan"),
        "false_positive_rate": n_fp / n_neg if n_neg else float("nan"),
        "replaced_wrongly": n_wrong / n_pos if n_pos else float("nan"),
        "n_boxes": n_pos,
        "n_without_box": n_neg,
        "min_confidence": float(min_confidence),
        "iou": float(iou),
    }


def read_overlay_boxes(path: str | Path) -> dict[str, Box | None]:
    """query_id → recorded box of pasted content (None when the query has none), from query_edits.csv
    (parsed and checked by isc_research.analysis.read_query_edits)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the overlay boxes come from a mini-DISC's query_edits.csv "
            "(isc-make-dataset writes it); a DISC21 folder has no boxes"
        )
    return {query_id: edits.overlay_box for query_id, edits in read_query_edits(path).items()}


def clip_box(box: Sequence[float], width: int, height: int) -> Box | None:
    """Pixel box (floor of the start, ceil of the end) clipped to the image; None when nothing is left."""
    x0, y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x1, y1 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None
