"""VisionForce's query replacement (RECIPES §4): a query whose top detected overlay box has confidence above a
threshold is replaced by that crop before its descriptor is extracted.

The detector runs once over the queries here; the crop itself is applied when extraction loads the image
(`ImageRecord.crop`, in fractions of the image size, so it also holds for JPEG draft-mode decoding).
VisionForce cropped from the query resized to a 640-px long side; the crop here is taken at full resolution.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Protocol, Sequence

from isc_research.data.records import ImageRecord
from isc_research.images import ImageLoadError, load_image

log = logging.getLogger(__name__)

__all__ = ["replace_queries_by_crops"]


class Detector(Protocol):
    name: str

    def detect(self, image) -> list[tuple[tuple[int, int, int, int], float]]: ...


def replace_queries_by_crops(
    queries: Sequence[ImageRecord],
    detector: Detector,
    min_confidence: float,
    csv_path: str | Path | None = None,
    *,
    skip_bad_images: bool = False,
) -> tuple[list[ImageRecord], dict]:
    """`queries` with `crop` set where the detector's most confident box has confidence > `min_confidence`,
    and a summary (counts, timing). `csv_path`: one row per query (query_id, replaced, confidence, box, size)."""
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"eval.query_crop.min_confidence must be in [0, 1], got {min_confidence}")
    out, rows, unreadable = [], [], 0
    started = time.perf_counter()
    for record in queries:
        try:
            image = load_image(record.path)
        except ImageLoadError as error:
            if not skip_bad_images:
                raise ImageLoadError(
                    f"{error} (while detecting query crops; eval.skip_bad_images=true skips unreadable images)"
                ) from error
            unreadable += 1
            out.append(record)
            continue
        detections = detector.detect(image)
        box, confidence = max(detections, key=lambda d: d[1]) if detections else (None, 0.0)
        replaced = box is not None and confidence > min_confidence
        w, h = image.size
        if replaced:
            out.append(replace(record, crop=(box[0] / w, box[1] / h, box[2] / w, box[3] / h)))
        else:
            out.append(record)
        rows.append((record.id, int(replaced), f"{confidence:.4f}", *(box or ("",) * 4), w, h))
    seconds = time.perf_counter() - started
    if csv_path is not None:
        csv_path = Path(csv_path)
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        with open(csv_path, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(("query_id", "replaced", "confidence", "x0", "y0", "x1", "y1", "width", "height"))
            writer.writerows(rows)
    n_replaced = sum(r[1] for r in rows)
    summary = {
        "detector": getattr(detector, "name", type(detector).__name__),
        "min_confidence": float(min_confidence),
        "n_queries": len(queries),
        "n_replaced": n_replaced,
        "n_unreadable": unreadable,
        "seconds": round(seconds, 2),
        "ms_per_query": round(1000 * seconds / max(1, len(rows)), 1),
        "file": None if csv_path is None else str(csv_path),
    }
    log.info(
        "query crops: %d of %d queries replaced by their detected crop (confidence > %.2f), %.1f ms/query",
        n_replaced,
        len(queries),
        min_confidence,
        summary["ms_per_query"],
    )
    return out, summary
