"""Overlay detector on the mini-DISC queries: box recall at IoU >= 0.5 against the boxes recorded in
query_edits.csv at several confidence thresholds, the share of queries without pasted content that it would
replace, and detection ms/image against the cost of extracting the same queries' descriptors with a descriptor
checkpoint (the baseline per-query cost of the descriptor track), both measured side by side here. Prints JSON.

    .venv/bin/python scripts/bench/detector.py --detector CKPT --descriptor CKPT [--data MINI_DISC_FOLDER]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from isc_research.data.records import list_split
from isc_research.detect import OverlayDetector, box_recall, read_overlay_boxes
from isc_research.checkpoints import load_checkpoint
from isc_research.extract import EvalTransform, ModelExtractor
from isc_research.images import load_image

THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", required=True, help="isc-train-detector checkpoint")
    parser.add_argument("--descriptor", required=True, help="isc-train checkpoint (baseline per-query cost)")
    parser.add_argument("--data", default="data/mini_disc/r600-t1500-q400-m35-s256-seed0-v3")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.data)
    truth = read_overlay_boxes(root / "query_edits.csv")
    queries = list_split(root, "query", "query", help_text=str(root))
    images = [load_image(q.path) for q in queries]

    detector = OverlayDetector.from_checkpoint(args.detector, min_confidence=0.0, device="cpu", max_boxes=10)
    detector.detect(images[0])  # warm-up
    started = time.perf_counter()
    detections = [detector.detect(im) for im in images]
    detect_ms = 1000 * (time.perf_counter() - started) / len(images)

    model, config = load_checkpoint(args.descriptor)
    extractor = ModelExtractor(model, EvalTransform(int(config["data"]["eval_size"])), device=torch.device("cpu"))
    extractor.embed([[extractor.transform(images[0])[0]]])
    started = time.perf_counter()
    for im in images:  # one image per call, as the detector
        extractor.embed([[v] for v in extractor.transform(im)])
    descriptor_ms = 1000 * (time.perf_counter() - started) / len(images)

    labels = [truth[q.id] for q in queries]
    by_threshold = {f"{t:g}": box_recall(labels, detections, min_confidence=t) for t in THRESHOLDS}
    print(
        json.dumps(
            {
                "queries": len(queries),
                "with_box": sum(b is not None for b in labels),
                "recall_at_iou0.5": {t: round(s["recall"], 4) for t, s in by_threshold.items()},
                "false_positive_rate": {t: round(s["false_positive_rate"], 4) for t, s in by_threshold.items()},
                "top1_recall": round(by_threshold["0.5"]["top1_recall"], 4),
                "detect_ms_per_image": round(detect_ms, 1),
                "descriptor_ms_per_image": round(descriptor_ms, 1),
                "detect_over_descriptor": round(detect_ms / descriptor_ms, 2),
                "machine": f"{platform.machine()}, {args.threads} torch thread(s), CPU shared with other jobs",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
