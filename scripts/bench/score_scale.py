"""Scale benchmark of descriptor-track scoring: global-candidate search + µAP at DISC21 size.

Synthetic 256-d float32 descriptors (unit norm, decaying spectrum so that neighbourhoods differ in density):
20 % of the queries are noisy copies of a reference (the ground truth), the rest distractors. For each size,
in a fresh process (so that peak RSS is that size's own), it measures
  * sgemm: this machine's float32 matrix-multiply rate (numpy/OpenBLAS, best of 3), before and after the search;
  * limit_s: the arithmetic limit of brute force, 2·nq·nr·d FLOPs ÷ that rate;
  * search_s: isc_research.search.global_candidates with the official 10 × nq results (RECIPES §1.4); ratio = search_s
  / limit_s;
  * uap_s: isc_research.metric.evaluate on those candidates; the µAP itself;
  * peak_rss / descriptor bytes (process peak, ru_maxrss; the descriptors are made in place, chunk by chunk).
Targets: ratio ≤ 1.5, peak RSS ≤ 1.5 × descriptor bytes. Prints one JSON object.

--device chooses the search path(s), each timed against its own GEMM rate measured in the same run:
cpu = the numpy path (numpy sgemm), torch-cpu = the torch path on the CPU (torch sgemm; what a GPU runs),
cuda = the torch path on the GPU (cuBLAS float32 without TF32, as the search runs it). Every path returns
the same ids and scores (tests/test_search.py); with several paths the JSON says whether they did here.

  python scripts/bench/score_scale.py --size small    # 5k × 100k (seconds), then 10k × 200k
  python scripts/bench/score_scale.py --size full     # 12.5k × 250k, then 50k × 1M (DISC21; minutes)
  python scripts/bench/score_scale.py --size disc21 --device cuda   # 50k × 1M × 256 on a GPU (scripts/bench/gpu.sh)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

SIZES = {
    "tiny": [(1_000, 20_000)],
    "small": [(5_000, 100_000), (10_000, 200_000)],
    "full": [(12_500, 250_000), (50_000, 1_000_000)],
    "disc21": [(50_000, 1_000_000)],
}
DEVICES = {"cpu": "cpu", "torch-cpu": "torch-cpu", "cuda": "cuda"}
DIM = 256
MATCH_FRACTION = 0.2  # RECIPES §1.1: ~20 % of DISC21 queries have a match


def sgemm_rate(device: str = "cpu", repeats: int = 3) -> float:
    """FLOP/s of a float32 (m×256)·(256×n) product, best of `repeats`: numpy (4096 × 8192, 128 MB out) for
    cpu, torch for torch-cpu (same shape) and cuda (8192 × 65536, the GPU search's tile; TF32 off)."""
    rng = np.random.default_rng(0)
    m, n = (8192, 65536) if device == "cuda" else (4096, 8192)
    a = rng.standard_normal((m, DIM), dtype=np.float32)
    b = rng.standard_normal((DIM, n), dtype=np.float32)
    if device == "cpu":
        fn = lambda: a @ b  # noqa: E731
    else:
        import torch

        torch.set_float32_matmul_precision("highest")
        dev = "cuda" if device == "cuda" else "cpu"
        ta, tb = torch.from_numpy(a).to(dev), torch.from_numpy(b).to(dev)

        def fn():
            ta @ tb
            if dev == "cuda":
                torch.cuda.synchronize()

    fn()  # warm-up
    best = min(_timed(fn) for _ in range(repeats))
    return 2 * m * DIM * n / best


def search_device(device: str):
    """The `device` argument of isc_research.search for a benchmark path name."""
    if device == "torch-cpu":
        from isc_research.search import _Torch

        return _Torch("cpu")
    return device


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _unit_rows(rng, n: int, scale: np.ndarray, out: np.ndarray, chunk: int = 65536) -> None:
    for s in range(0, n, chunk):
        x = rng.standard_normal((min(chunk, n - s), DIM), dtype=np.float32)
        x *= scale
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s : s + len(x)] = x


def synthetic(nq: int, nr: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    scale = (np.arange(1, DIM + 1, dtype=np.float32) ** -0.5).astype(np.float32)  # decaying spectrum
    references = np.empty((nr, DIM), np.float32)
    _unit_rows(rng, nr, scale, references)
    queries = np.empty((nq, DIM), np.float32)
    _unit_rows(rng, nq, scale, queries)
    n_match = int(MATCH_FRACTION * nq)
    source = rng.choice(nr, size=n_match, replace=False)
    noise = rng.uniform(0.3, 1.2, size=(n_match, 1)).astype(np.float32)  # copies from easy to hard
    copies = references[source] + noise * queries[:n_match]  # reuse distractor noise rows as perturbations
    queries[:n_match] = copies / np.linalg.norm(copies, axis=1, keepdims=True)
    qids = np.array([f"Q{i:05d}" for i in range(nq)])
    rids = np.array([f"R{i:06d}" for i in range(nr)])
    return queries, references, qids, rids, {qids[i]: rids[source[i]] for i in range(n_match)}


def rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def one_size(nq: int, nr: int, rate_before: float, device: str = "cpu") -> dict:
    """Run in its own process: data, search, µAP, measurements. The sgemm rate is measured by the parent right
    before and by this process right after the search (the machine is shared: its speed drifts); the limit
    uses their mean."""
    from isc_research.metric import GroundTruth, evaluate
    from isc_research.search import global_candidates

    t = time.perf_counter()
    queries, references, qids, rids, matches = synthetic(nq, nr)
    make_s = time.perf_counter() - t
    descriptor_bytes = queries.nbytes + references.nbytes
    path = search_device(device)  # torch imported before the clock starts
    rss_after_data = rss_bytes()
    t = time.perf_counter()
    predictions = global_candidates(queries, references, qids, rids, num_results=10 * nq, device=path)
    search_s = time.perf_counter() - t
    digest = hashlib.sha256(
        predictions.query_ids.tobytes() + predictions.reference_ids.tobytes() + predictions.scores.tobytes()
    ).hexdigest()[:16]
    gt = GroundTruth.from_pairs(qids.tolist(), matches)
    t = time.perf_counter()
    metrics = evaluate(gt, predictions)
    uap_s = time.perf_counter() - t
    peak = rss_bytes()
    del queries, references, predictions
    rate_after = sgemm_rate(device)
    rate = (rate_before + rate_after) / 2
    limit_s = 2.0 * nq * nr * DIM / rate
    return {
        "device": device,
        "n_queries": nq,
        "n_references": nr,
        "dim": DIM,
        "sgemm_gflops": round(rate / 1e9, 1),
        "sgemm_gflops_before_after": [round(rate_before / 1e9, 1), round(rate_after / 1e9, 1)],
        "ratio_range": [
            round(search_s * rate_before / (2.0 * nq * nr * DIM), 3),
            round(search_s * rate_after / (2.0 * nq * nr * DIM), 3),
        ],
        "limit_s": round(limit_s, 2),
        "search_s": round(search_s, 2),
        "ratio_to_limit": round(search_s / limit_s, 3),
        "uap_s": round(uap_s, 2),
        "uAP": round(metrics.uAP, 4),
        "n_predictions": metrics.n_predictions,
        "descriptor_bytes": descriptor_bytes,
        "peak_rss_bytes": peak,
        "rss_after_data_bytes": rss_after_data,
        "peak_rss_over_descriptors": round(peak / descriptor_bytes, 3),
        "data_s": round(make_s, 2),
        "targets_met": bool(search_s / limit_s <= 1.5 and peak / descriptor_bytes <= 1.5),
        "predictions_sha256": digest,  # ids and scores: equal across paths when the results are identical
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument(
        "--device",
        nargs="+",
        choices=sorted(DEVICES),
        default=["cpu"],
        help="search path(s): cpu (numpy), torch-cpu, cuda",
    )
    p.add_argument("--one", nargs=4, metavar=("NQ", "NR", "RATE", "DEVICE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(one_size(int(args.one[0]), int(args.one[1]), float(args.one[2]), args.one[3])))
        return 0
    results = []
    for nq, nr in SIZES[args.size]:
        for device in args.device:
            rate = sgemm_rate(device)  # measured right before each size: the machine is shared, its speed drifts
            out = subprocess.run(
                [sys.executable, __file__, "--one", str(nq), str(nr), str(rate), device], capture_output=True, text=True
            )
            if out.returncode != 0:
                print(out.stderr, file=sys.stderr)
                return out.returncode
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), file=sys.stderr)
    same = (
        {
            f"{nq}x{nr}": len(
                {r["predictions_sha256"] for r in results if (r["n_queries"], r["n_references"]) == (nq, nr)}
            )
            == 1
            for nq, nr in SIZES[args.size]
        }
        if len(args.device) > 1
        else None
    )
    growth = None
    firsts = [r for r in results if r["device"] == args.device[0]]
    if len(firsts) == 2:
        a, b = firsts
        work = (b["n_queries"] * b["n_references"]) / (a["n_queries"] * a["n_references"])
        growth = {"work_factor": work, "search_time_factor": round(b["search_s"] / a["search_s"], 2)}
    print(
        json.dumps(
            {
                "benchmark": "score_scale",
                "size": args.size,
                "devices": args.device,
                "results": results,
                "identical_across_paths": same,
                "growth": growth,
                "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, shared with other jobs during the run",
                "targets": {"ratio_to_limit": 1.5, "peak_rss_over_descriptors": 1.5},
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
