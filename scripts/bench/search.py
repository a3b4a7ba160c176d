"""isc-search on a DISC-layout dataset: index its references, search its queries. Prints JSON: index build
images/s (embedding + faiss add + saving), query latency (one image at a time, end to end; and per image in a
batch), faiss search time alone, the calibrated threshold with the validation precision/recall it was chosen at,
and the precision/recall of the flagged matches (top-10 per query, score ≥ threshold) on this dataset's queries.

    .venv/bin/python scripts/bench/search.py --checkpoint CKPT --data DIR [--calibration-data DIR] [--threads 1]

--data: where references and queries come from (query/, reference/, ground_truth.csv); --calibration-data:
the threshold's validation set (default: --data, i.e. in-sample; pass another mini-DISC, e.g. built with
--seed 1, for a held-out figure). A side-by-side baseline does not apply here: the figures are absolute.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from isc_research.formats import read_ground_truth
from isc_research.index.calibrate import calibrate, validation_set
from isc_research.index.embed import Embedder, list_images
from isc_research.index.store import SearchIndex


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--calibration-data", type=Path, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--single", type=int, default=30, help="queries timed one at a time")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    embedder = Embedder(args.checkpoint)
    started = time.perf_counter()
    calibration = calibrate(embedder, validation_set({}, args.calibration_data or args.data), progress=False)
    calibration_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        index = SearchIndex.create(Path(tmp) / "index", embedder.settings(), calibration)
        references, _ = list_images([args.data / "reference"])
        started = time.perf_counter()
        report = index.add(embedder, [args.data / "reference"], progress=False)
        build_s = time.perf_counter() - started
        queries, _ = list_images([args.data / "query"])
        started = time.perf_counter()
        embedded = embedder.embed_files(queries, progress=False)
        embed_s = time.perf_counter() - started
        started = time.perf_counter()
        found = index.search(embedded.vectors, 10)
        search_s = time.perf_counter() - started
        single = []
        for q in queries[: args.single]:
            started = time.perf_counter()
            index.search(embedder.embed_files([q], progress=False).vectors, 10)
            single.append(time.perf_counter() - started)
    gt = read_ground_truth(args.data / "ground_truth.csv")
    t = calibration.threshold
    flagged = [
        (Path(q).stem, Path(m).stem)
        for q, matches in zip(embedded.paths, found)
        for m, s in matches
        if t is not None and s >= t
    ]
    correct = sum(gt.matches.get(q) == r for q, r in flagged)
    rank1 = sum(gt.matches.get(Path(q).stem) == Path(m[0][0]).stem for q, m in zip(embedded.paths, found) if m)
    print(
        json.dumps(
            {
                "checkpoint": args.checkpoint,
                "data": str(args.data),
                "threads": args.threads,
                "index_build": {
                    "images": len(references),
                    "seconds": round(build_s, 2),
                    "images_per_s": round(len(references) / build_s, 1),
                    **report.counts(),
                },
                "query": {
                    "images": len(queries),
                    "batched_ms_per_image": round(1000 * embed_s / len(queries), 2),
                    "single_image_ms_median": round(1000 * statistics.median(single), 2),
                    "faiss_search_ms_per_query": round(1000 * search_s / len(queries), 4),
                },
                "threshold": t,
                "calibration": {k: v for k, v in calibration.to_dict().items() if k != "unreadable"},
                "calibration_seconds": round(calibration_s, 1),
                "calibration_unreadable": len(calibration.unreadable),
                "flagged_on_data": {
                    "flagged_pairs": len(flagged),
                    "correct": correct,
                    "gt_pairs": gt.n_pairs,
                    "precision": round(correct / len(flagged), 4) if flagged else None,
                    "recall": round(correct / gt.n_pairs, 4),
                    "true_source_rank1": rank1,
                },
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs visible (shared), torch {torch.__version__}",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
