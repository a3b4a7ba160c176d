"""Predictions at the official limit: write_predictions, read_predictions and evaluate on 500,000 rows
(50,000 queries, 10,000 of them matched), with the time of each and its Python-call count (tests/ check
the counts do not grow with the rows; the times are measured here, not in the tests). Prints JSON.

    .venv/bin/python scripts/bench/predictions_io.py [--rows 500000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from isc_research.formats import read_predictions, write_predictions  # noqa: E402
from isc_research.metric import GroundTruth, Predictions, evaluate  # noqa: E402
from tests.call_count import python_calls  # noqa: E402


def case(n: int, n_queries: int = 50_000) -> tuple[GroundTruth, Predictions]:
    rng = np.random.default_rng(0)
    queries = np.char.add("Q", np.char.zfill(np.arange(n_queries).astype(str), 5))
    gt = GroundTruth.from_pairs(queries.tolist(), {q: "R" + q[1:] for q in queries[: n_queries // 5].tolist()})
    q = queries[rng.integers(n_queries, size=n)]
    r = np.char.add("R", np.char.zfill(rng.permutation(1_000_000)[:n].astype(str), 6))
    q[:5000], r[:5000] = queries[:5000], np.char.add("R", np.char.lstrip(queries[:5000], "Q"))  # true pairs
    return gt, Predictions(q, r, np.round(rng.normal(size=n), 2))


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(min(times), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    gt, preds = case(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "predictions.csv"
        steps = {
            "write_predictions": lambda: write_predictions(path, preds),
            "read_predictions": lambda: read_predictions(path),
            "evaluate": lambda: evaluate(gt, preds),
        }
        result = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "rows": args.rows,
            "unit": f"seconds, best of {args.repeats}",
            "seconds": {},
            "python_calls": {},
        }
        for name, fn in steps.items():
            result["seconds"][name] = best_of(args.repeats, fn)
            result["python_calls"][name] = python_calls(fn)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
