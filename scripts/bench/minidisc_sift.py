"""How many real pixels do unrelated mini-DISC images share? SIFT inliers of true and false pairs.

For a mini-DISC folder (or any DISC21-shaped one: query/, reference/, training/, ground_truth.csv) it counts, per
pair of images, the SIFT matches that pass Lowe's ratio test (0.75) and then a RANSAC homography (OpenCV,
reprojection error 5 px) — the classical test for "these two images show the same pixels". Pairs:

  true                        each matched query and its reference (all of them);
  query_vs_unrelated_ref      a random query and a random reference that is not its match (--pairs of them);
  ref_vs_unrelated_ref        two random different references (--pairs);
  training_vs_ref             a random training image and a random reference (--pairs; training must not leak
                              references).

  hardest_false_ref           with --hardest N: for N random queries, the most inliers any reference other than
                              the query's own reaches (all references tried): what a verifier re-ranking the
                              candidates of a query meets.

Prints JSON: per kind, n, median, p90, p99, max of the inlier counts and the share of pairs with ≥ 20 inliers
(a common "same image" threshold for SIFT + RANSAC). A false pair with as many inliers as a true pair means two
images of different identity share real pixels (the builder cropped them from overlapping parts of one photo).

    .venv/bin/python scripts/bench/minidisc_sift.py DIR [--pairs 1500] [--hardest 0] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from pathlib import Path

import cv2
import numpy as np

RATIO = 0.75
RANSAC_PIXELS = 5.0
SAME_IMAGE_INLIERS = 20


def features(path: Path, sift) -> np.ndarray | tuple:
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise SystemExit(f"{path}: unreadable image")
    keypoints, descriptors = sift.detectAndCompute(grey, None)
    points = np.float32([k.pt for k in keypoints]).reshape(-1, 2)
    return points, descriptors


def inliers(a: tuple, b: tuple, matcher) -> int:
    (pa, da), (pb, db) = a, b
    if da is None or db is None or len(da) < 2 or len(db) < 2:
        return 0
    good = [m for m, n in (p for p in matcher.knnMatch(da, db, k=2) if len(p) == 2) if m.distance < RATIO * n.distance]
    if len(good) < 4:
        return 0
    src = pa[[m.queryIdx for m in good]]
    dst = pb[[m.trainIdx for m in good]]
    _, mask = cv2.findHomography(src, dst, cv2.RANSAC, RANSAC_PIXELS)
    return 0 if mask is None else int(mask.sum())


def stats(counts: list[int]) -> dict:
    a = np.asarray(counts, dtype=np.float64)
    return {
        "n": len(a),
        "median": float(np.median(a)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "max": int(a.max()),
        f"share_ge_{SAME_IMAGE_INLIERS}": round(float((a >= SAME_IMAGE_INLIERS).mean()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="mini-DISC folder")
    parser.add_argument("--pairs", type=int, default=1500, help="random pairs per false kind")
    parser.add_argument("--hardest", type=int, default=0, help="queries matched against every reference")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    started = time.perf_counter()
    with open(args.data / "ground_truth.csv", newline="") as f:
        matches = {r["query_id"]: r["reference_id"] for r in csv.DictReader(f)}
    files = {
        split: {p.stem: p for p in sorted((args.data / split).glob("*.jpg"))}
        for split in ("query", "reference", "training")
    }
    if not files["query"] or not files["reference"]:
        raise SystemExit(f"{args.data}: no query/ or reference/ images (give a mini-DISC folder)")
    rng = np.random.default_rng(args.seed)
    queries, references, training = (sorted(files[s]) for s in ("query", "reference", "training"))
    pairs: dict[str, list[tuple[str, str, str, str]]] = {
        "true": [("query", q, "reference", r) for q, r in sorted(matches.items()) if r]
    }
    false_q, false_r, train_r = [], [], []
    while len(false_q) < args.pairs:
        q, r = queries[rng.integers(len(queries))], references[rng.integers(len(references))]
        if matches.get(q) != r:
            false_q.append(("query", q, "reference", r))
    while len(false_r) < args.pairs:
        a, b = rng.choice(len(references), 2, replace=False)
        false_r.append(("reference", references[a], "reference", references[b]))
    while training and len(train_r) < args.pairs:
        train_r.append(
            ("training", training[rng.integers(len(training))], "reference", references[rng.integers(len(references))])
        )
    pairs.update(query_vs_unrelated_ref=false_q, ref_vs_unrelated_ref=false_r, training_vs_ref=train_r)

    sift = cv2.SIFT_create()
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    cache: dict[tuple[str, str], tuple] = {}

    def feats(split: str, image_id: str) -> tuple:
        if (split, image_id) not in cache:
            cache[split, image_id] = features(files[split][image_id], sift)
        return cache[split, image_id]

    result = {
        "data": str(args.data.resolve()),
        "pairs_per_false_kind": args.pairs,
        "seed": args.seed,
        "ratio_test": RATIO,
        "ransac_pixels": RANSAC_PIXELS,
    }
    manifest = args.data / "manifest.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        result["format_version"] = m.get("format_version")
        result["spec"] = m.get("spec")
    for kind, kind_pairs in pairs.items():
        if kind_pairs:
            result[kind] = stats([inliers(feats(s1, i1), feats(s2, i2), matcher) for s1, i1, s2, i2 in kind_pairs])
    if args.hardest:
        chosen = rng.choice(len(queries), min(args.hardest, len(queries)), replace=False)
        result["hardest_false_ref"] = stats(
            [
                max(
                    inliers(feats("query", queries[i]), feats("reference", r), matcher)
                    for r in references
                    if r != matches.get(queries[i])
                )
                for i in chosen
            ]
        )
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["machine"] = f"{platform.machine()}, opencv {cv2.__version__}"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
