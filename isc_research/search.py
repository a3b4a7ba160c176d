"""Exact candidate generation: the official global top-N rule and per-query kNN, on the CPU or a GPU.

Scores follow the ISC convention (higher = more similar): ``-squared_L2`` for ``metric="l2"`` (as faiss
``IndexFlatL2``) and the inner product for ``metric="ip"`` (``IndexFlatIP``).

How: float32 GEMMs in blocks only *select candidates*; the scores of the selected pairs are then recomputed
from the vectors on the host (one function for every device) and the list is cut in a fixed order (score
descending, then query row, then reference row). The selection keeps every pair whose GEMM score is within
``delta`` of the running cut-off, where ``delta`` bounds the rounding error of a float32 dot product of
length m (Higham's γ_m = m·u/(1 − m·u), valid for any summation order, hence for every BLAS and cuBLAS
kernel) plus that of the rescoring. So the result is exact in float32 and does not depend on the device or
the kernel: ties are broken by row order, never by a library's heap.

Devices (``device=`` argument, default cpu; ``eval.search_device`` of isc-eval, isc-match and the evaluation
callback's ``search_device``: auto | cpu | cuda):

* ``"cpu"`` — numpy GEMMs (and faiss' brute-force ``knn`` for the per-query kNN pre-selection), threads
  for the comparison pass;
* a torch device (``"cuda"``, ``"cuda:1"``; ``"auto"`` = cuda when torch sees one, else cpu) — the same
  blocks as torch matmuls on the device; only the few selected pairs cross to the host.

Why torch and not faiss-gpu (the ``gpu`` extra): faiss-gpu could not be installed in this project's
environment (so nothing could test it), its k-selection orders ties differently from faiss-cpu (the GPU list
would differ from the CPU one at the cut-off), and its k is capped at 2048 while the global rule keeps
10 × #queries pairs. The search is GEMM-bound, and cuBLAS through torch is the GEMM; the torch
path also runs on the CPU, which is how the tests hold it to the numpy path (ids and scores identical, ties
included). TF32 is switched off for the duration of a search: it would widen the GEMM error beyond ``delta``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from isc_research.metric import Predictions, _as_ids

__all__ = ["CANDIDATE_RULES", "candidates", "global_candidates", "knn_candidates", "knn_rows"]

_METRICS = ("l2", "ip")
_U = 2.0**-24  # float32 unit roundoff


def _vectors(x: object, name: str) -> np.ndarray:
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, dim), got shape {arr.shape}")
    for start in range(0, len(arr), 65536):
        block = arr[start : start + 65536]
        if not np.isfinite(block).all():
            row = start + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
            raise ValueError(f"{name} holds a non-finite value (NaN or inf) in row {row}")
    return arr


def _ids(ids: object, n: int, name: str) -> np.ndarray:
    arr = _as_ids(ids, name)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"{name} must list one id per vector: got shape {arr.shape} for {n} vectors")
    uniq, counts = np.unique(arr, return_counts=True)
    if len(uniq) != n:
        raise ValueError(f"{name} contains duplicates, e.g. {str(uniq[counts > 1][0])!r}")
    return arr


def _pair_vectors(query_vectors: object, reference_vectors: object, metric: str) -> tuple[np.ndarray, np.ndarray]:
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
    q = _vectors(query_vectors, "query_vectors")
    r = _vectors(reference_vectors, "reference_vectors")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"query and reference dimensions differ: {q.shape[1]} vs {r.shape[1]}")
    if len(r) == 0 or r.shape[1] == 0:
        raise ValueError(f"reference_vectors is empty (shape {r.shape})")
    return q, r


def _prepare(
    query_vectors: object, reference_vectors: object, query_ids: object, reference_ids: object, metric: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    q, r = _pair_vectors(query_vectors, reference_vectors, metric)
    return q, r, _ids(query_ids, len(q), "query_ids"), _ids(reference_ids, len(r), "reference_ids")


def _check_batch_size(batch_size: int | None, name: str = "batch_size") -> None:
    if batch_size is not None and (not isinstance(batch_size, int | np.integer) or batch_size < 1):
        raise ValueError(f"{name} must be a positive integer, got {batch_size!r}")


def _margin(q: np.ndarray, r: np.ndarray, metric: str) -> float:
    """Twice the worst rounding error of a GEMM score plus that of its rescoring (so a pair of the exact top
    list can never fall more than this below the GEMM cut-off). The augmented l2 rows have d + 2 terms and
    Σ|aᵢbᵢ| ≤ (‖q‖ + ‖r‖)², the norms inside them and the rescoring differences add at most as much again."""
    m = q.shape[1] + 2
    gamma = m * _U / (1 - m * _U)
    qn = float(np.sqrt(np.einsum("nd,nd->n", q, q).max())) if len(q) else 0.0
    rn = float(np.sqrt(np.einsum("nd,nd->n", r, r).max()))
    return 8 * gamma * (qn + rn) ** 2 if metric == "l2" else 4 * gamma * qn * rn


def _augmented(x: np.ndarray, metric: str, side: str) -> np.ndarray:
    """Rows whose inner products give the score directly: for l2, [2q, 1, −‖q‖²]·[r, −‖r‖², 1] = −‖q − r‖²."""
    if metric == "ip":
        return x
    out = np.empty((len(x), x.shape[1] + 2), np.float32)
    norms = np.einsum("nd,nd->n", x, x)
    if side == "query":
        np.multiply(x, 2.0, out=out[:, :-2])
        out[:, -2], out[:, -1] = 1.0, -norms
    else:
        out[:, :-2] = x
        out[:, -2], out[:, -1] = -norms, 1.0
    return out


def _pair_scores(q: np.ndarray, r: np.ndarray, qi: np.ndarray, ri: np.ndarray, metric: str) -> np.ndarray:
    """The scores of the selected pairs computed directly (‖q − r‖² from the difference, no cancellation: the
    GEMM form loses the small distances of near-duplicates to float32 rounding, and creates false ties)."""
    out = np.empty(len(qi), np.float32)
    for start in range(0, len(qi), 16384):
        a, b = q[qi[start : start + 16384]], r[ri[start : start + 16384]]
        if metric == "l2":
            a = a - b
            out[start : start + len(a)] = -np.einsum("nd,nd->n", a, a)
        else:
            out[start : start + len(a)] = np.einsum("nd,nd->n", a, b)
    return out


# ----------------------------------------------------------------------------------------------- backends
class _Numpy:
    """GEMM tiles in host memory; the comparison pass split over threads (numpy releases the GIL)."""

    name = "cpu"
    batch_size, reference_block = 1024, 16384  # a 64 MB tile

    def __enter__(self) -> _Numpy:
        self.threads = max(1, min(8, os.cpu_count() or 1))
        self.pool = ThreadPoolExecutor(max_workers=self.threads)
        self._tile = self._mask = np.empty(0)
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown()

    def put(self, x: np.ndarray, metric: str, side: str) -> np.ndarray:
        return _augmented(x, metric, side)

    def gemm(self, rows: np.ndarray, block: np.ndarray) -> np.ndarray:
        size = len(rows) * len(block)
        if self._tile.size < size:
            self._tile, self._mask = np.empty(size, np.float32), np.empty(size, bool)
        tile = self._tile[:size].reshape(len(rows), len(block))
        np.matmul(rows, block.T, out=tile)
        return tile

    def kth_largest(self, tile: np.ndarray, n: int) -> float:
        values = tile.ravel().copy()
        values.partition(tile.size - n)
        return float(values[tile.size - n])

    def hits(self, tile: np.ndarray, threshold: float | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, cols, values) of the entries ≥ threshold (a scalar, or one value per row)."""
        mask = self._mask[: tile.size].reshape(tile.shape)
        per_row = np.ndim(threshold) > 0
        bounds = np.linspace(0, len(tile), self.threads + 1, dtype=int)

        def scan(ab: tuple[int, int]) -> np.ndarray:
            a, b = ab
            thr = threshold[a:b, None] if per_row else threshold
            np.greater_equal(tile[a:b], thr, out=mask[a:b])
            return np.flatnonzero(mask[a:b]) + a * tile.shape[1]  # much faster than a 2-D nonzero

        parts = list(self.pool.map(scan, [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]))
        flat = np.concatenate(parts) if parts else np.empty(0, np.int64)
        rows, cols = np.divmod(flat, tile.shape[1])
        return rows, cols, tile.ravel()[flat]

    def knn(self, queries: np.ndarray, r: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """GEMM scores and reference rows of the k best per query, best first (faiss' brute-force ``knn``
        searches the references in place, keeping no second copy: 1 GB for DISC21's 1M × 256)."""
        import faiss

        d, i = faiss.knn(queries, r, k, metric=faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT)
        return (-d if metric == "l2" else d), i


class _Torch:
    """The same tiles as torch matmuls on a torch device (cuBLAS on a GPU; CPU BLAS in the tests)."""

    batch_size, reference_block = 8192, 65536  # a 2 GiB tile on a GPU

    def __init__(self, device: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.name = str(self.device)
        if self.device.type == "cpu":
            self.batch_size, self.reference_block = _Numpy.batch_size, _Numpy.reference_block

    def __enter__(self) -> _Torch:
        self._precision = self.torch.get_float32_matmul_precision()
        self.torch.set_float32_matmul_precision("highest")  # no TF32: its error would exceed the margin
        return self

    def __exit__(self, *exc) -> None:
        self.torch.set_float32_matmul_precision(self._precision)

    def put(self, x: np.ndarray, metric: str, side: str):
        """The rows of `_augmented` (made on the host, one block at a time) on the device."""
        return self.torch.from_numpy(np.ascontiguousarray(_augmented(x, metric, side))).to(self.device)

    def gemm(self, rows, block):
        return rows @ block.T

    def kth_largest(self, tile, n: int) -> float:
        return float(self.torch.topk(tile.reshape(-1), n, sorted=False).values.min())

    def hits(self, tile, threshold) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if np.ndim(threshold) > 0:
            threshold = self.torch.from_numpy(np.asarray(threshold, np.float32)).to(self.device)[:, None]
        flat = (tile >= threshold).reshape(-1).nonzero().squeeze(1)
        values = tile.reshape(-1)[flat].cpu().numpy()
        rows, cols = np.divmod(flat.cpu().numpy(), tile.shape[1])
        return rows, cols, values

    def knn(self, queries: np.ndarray, r: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        scores = np.empty((len(queries), k), np.float32)
        labels = np.empty((len(queries), k), np.int64)
        for q0 in range(0, len(queries), self.batch_size):
            rows = self.put(queries[q0 : q0 + self.batch_size], metric, "query")
            best_v = best_i = None
            for r0 in range(0, len(r), self.reference_block):
                tile = self.gemm(rows, self.put(r[r0 : r0 + self.reference_block], metric, "reference"))
                v, i = torch.topk(tile, min(k, tile.shape[1]), dim=1)
                if best_v is not None:
                    v, j = torch.topk(torch.cat([best_v, v], 1), min(k, best_v.shape[1] + v.shape[1]), dim=1)
                    i = torch.cat([best_i, i + r0], 1).gather(1, j)
                else:
                    i = i + r0
                best_v, best_i = v, i
            scores[q0 : q0 + len(rows)] = best_v.cpu().numpy()
            labels[q0 : q0 + len(rows)] = best_i.cpu().numpy()
        return scores, labels


def _backend(device):
    if isinstance(device, _Numpy | _Torch):  # the tests' way to run the torch path on the CPU
        return device
    if device is None or str(device) == "cpu":  # None: the numpy path, as before devices existed
        return _Numpy()
    from isc_research.scaling import resolve_device  # imports torch: only when a device is asked for

    try:
        resolved = resolve_device(str(device))
    except ValueError as e:
        raise ValueError(f"search {e}") from None
    return _Numpy() if resolved.type == "cpu" else _Torch(str(resolved))


# ------------------------------------------------------------------------------------------------ global
class _Band:
    """The pairs that can still be among the n best: GEMM score ≥ tau − delta, where tau is a rising lower bound
    on the final n-th best GEMM score (an entry below the band can never enter the list, so each tile costs
    one comparison pass plus its few hits)."""

    def __init__(self, n: int, delta: float) -> None:
        self.n, self.delta = n, delta
        self.tau = -np.inf
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.size = 0
        self.limit = 2 * n

    def add(self, s: np.ndarray, q: np.ndarray, r: np.ndarray) -> None:
        if len(s):
            self.parts.append((s, q, r))
            self.size += len(s)
            if self.size > self.limit:
                self._trim()

    def _trim(self) -> None:
        s, q, r = (np.concatenate(x) for x in zip(*self.parts))
        if len(s) >= self.n:
            nth = float(np.partition(s, len(s) - self.n)[len(s) - self.n])
            self.tau = max(self.tau, nth)
            keep = s >= self.tau - self.delta
            s, q, r = s[keep], q[keep], r[keep]
        self.parts, self.size = [(s, q, r)], len(s)
        self.limit = 2 * max(self.n, self.size)  # a band wider than n (many ties) is not trimmed every tile

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.parts:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        self._trim()
        return self.parts[0][1], self.parts[0][2]


def _global_pool(
    backend, q: np.ndarray, r: np.ndarray, n: int, metric: str, batch_size: int, reference_block: int
) -> tuple[np.ndarray, np.ndarray]:
    """(query rows, reference rows) of a superset of the exact n best pairs (see the module docstring)."""
    band = _Band(n, _margin(q, r, metric))
    queries = [(q0, backend.put(q[q0 : q0 + batch_size], metric, "query")) for q0 in range(0, len(q), batch_size)]
    for r0 in range(0, len(r), reference_block):
        block = backend.put(r[r0 : r0 + reference_block], metric, "reference")
        for q0, rows in queries:
            tile = backend.gemm(rows, block)
            if band.tau == -np.inf and tile.shape[0] * tile.shape[1] >= n:  # the first tile alone fills the list:
                band.tau = backend.kth_largest(tile, n)  # a lower bound of the final n-th best
            i, j, s = backend.hits(tile, band.tau - band.delta)
            band.add(s, i + q0, j + r0)
    return band.result()


def global_candidates(
    query_vectors: object,
    reference_vectors: object,
    query_ids: object,
    reference_ids: object,
    *,
    num_results: int | None = None,
    metric: str = "l2",
    batch_size: int | None = None,
    reference_block: int | None = None,
    device=None,
) -> Predictions:
    """The ``num_results`` (default 10 × #queries) globally best (query, reference) pairs, best first.

    Exact brute force at the speed of the matrix multiply: reference blocks × query batches of scores come
    from one float32 GEMM each (squared L2 folded into it by two extra dimensions, as faiss computes it:
    ‖q‖² + ‖r‖² − 2q·r); a running lower bound on the final cut-off keeps only the entries of each tile that
    can still enter the list; their scores are recomputed from the vectors (exact in float32) and ties at the
    cut-off go to the lower (query row, reference row). Memory: the inputs, one augmented reference block and
    one (batch_size × reference_block) tile — 64 MB by default on the CPU, 2 GiB on a GPU, where the
    queries are held augmented too; the references are not copied whole.
    """
    q, r, qids, rids = _prepare(query_vectors, reference_vectors, query_ids, reference_ids, metric)
    _check_batch_size(batch_size)
    _check_batch_size(reference_block, "reference_block")
    n_res = 10 * len(q) if num_results is None else num_results
    if not isinstance(n_res, int | np.integer) or n_res < 0:
        raise ValueError(f"num_results must be a non-negative integer, got {num_results!r}")
    n_res = min(int(n_res), len(q) * len(r))
    if n_res == 0:
        return Predictions.from_rows([])
    with _backend(device) as backend:
        pool_q, pool_r = _global_pool(
            backend, q, r, n_res, metric, batch_size or backend.batch_size, reference_block or backend.reference_block
        )
    pool_s = _pair_scores(q, r, pool_q, pool_r, metric)
    order = np.lexsort((pool_r, pool_q, -pool_s))[:n_res]
    return Predictions(qids[pool_q[order]], rids[pool_r[order]], pool_s[order].astype(np.float64))


# --------------------------------------------------------------------------------------------------- kNN
def _knn_pool(
    backend, q: np.ndarray, r: np.ndarray, k: int, metric: str, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(query rows, reference rows) holding, for every query, a superset of its exact k best references:
    the GEMM's 2k best, and a full scan of the rows whose band (k-th GEMM score − delta) reaches past them."""
    delta = _margin(q, r, metric)
    wide = min(len(r), 2 * k + 8)
    parts_q, parts_r = [], []
    for q0 in range(0, len(q), batch_size):
        rows = q[q0 : q0 + batch_size]
        s, idx = backend.knn(rows, r, wide, metric)
        threshold = s[:, k - 1] - delta
        keep = s >= threshold[:, None]
        parts_q.append(np.repeat(np.arange(q0, q0 + len(rows)), keep.sum(1)))
        parts_r.append(idx[keep])
        if wide < len(r):
            full = np.flatnonzero(s[:, -1] >= threshold)  # the band may hold more than `wide` entries
            if len(full):
                queries = backend.put(rows[full], metric, "query")
                for r0 in range(0, len(r), backend.reference_block):
                    tile = backend.gemm(queries, backend.put(r[r0 : r0 + backend.reference_block], metric, "reference"))
                    i, j, _ = backend.hits(tile, threshold[full])
                    parts_q.append(full[i] + q0)
                    parts_r.append(j + r0)
    pool_q, pool_r = np.concatenate(parts_q), np.concatenate(parts_r)
    pairs = np.unique(pool_q * len(r) + pool_r)  # a fully scanned row's first `wide` entries come twice
    return np.divmod(pairs, len(r))


def knn_rows(
    query_vectors: object,
    reference_vectors: object,
    *,
    k: int = 10,
    metric: str = "l2",
    batch_size: int = 4096,
    device=None,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, reference rows), each (#queries, k): every query's k nearest references best first (ties:
    lower reference row first), scores exact in float32; k must not exceed the number of references."""
    q, r = _pair_vectors(query_vectors, reference_vectors, metric)
    _check_batch_size(batch_size)
    if not isinstance(k, int | np.integer) or not 1 <= k <= len(r):
        raise ValueError(f"k must be a positive integer at most the {len(r)} references, got {k!r}")
    if len(q) == 0:
        return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
    with _backend(device) as backend:
        pool_q, pool_r = _knn_pool(backend, q, r, int(k), metric, batch_size)
    pool_s = _pair_scores(q, r, pool_q, pool_r, metric)
    order = np.lexsort((pool_r, -pool_s, pool_q))
    pool_q, pool_r, pool_s = pool_q[order], pool_r[order], pool_s[order]
    starts = np.searchsorted(pool_q, np.arange(len(q)))
    keep = (np.arange(len(pool_q)) - starts[pool_q]) < k
    return pool_s[keep].reshape(len(q), k), pool_r[keep].reshape(len(q), k)


def knn_candidates(
    query_vectors: object,
    reference_vectors: object,
    query_ids: object,
    reference_ids: object,
    *,
    k: int = 10,
    metric: str = "l2",
    batch_size: int = 4096,
    device=None,
) -> Predictions:
    """The k nearest references of every query (k clipped to the number of references), queries in input
    order, each query's references best first (ties: lower reference row first); scores exact in float32."""
    q, r, qids, rids = _prepare(query_vectors, reference_vectors, query_ids, reference_ids, metric)
    _check_batch_size(batch_size)
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = min(int(k), len(r))
    if len(q) == 0:
        return Predictions.from_rows([])
    scores, labels = knn_rows(q, r, k=k, metric=metric, batch_size=batch_size, device=device)
    return Predictions(np.repeat(qids, k), rids[labels.ravel()], scores.ravel().astype(np.float64))


CANDIDATE_RULES = ("global", "knn")


def candidates(
    rule: str,
    query_vectors: object,
    reference_vectors: object,
    query_ids: object,
    reference_ids: object,
    *,
    results_per_query: int = 10,
    n_queries: int | None = None,
    k: int = 10,
    metric: str = "l2",
    device=None,
    setting: str = "candidates",
) -> Predictions:
    """The candidate list of a rule by name (isc-eval's `eval.candidates`, the evaluation callback's
    `candidates`): "global", the official list of the results_per_query × n_queries best pairs (n_queries: the
    whole query set, skipped queries included; default: the queries given), or "knn", k per query.
    `setting` names the config key in the error for an unknown rule."""
    if rule == "global":
        n = len(query_vectors) if n_queries is None else int(n_queries)
        return global_candidates(
            query_vectors,
            reference_vectors,
            query_ids,
            reference_ids,
            num_results=int(results_per_query) * n,
            metric=metric,
            device=device,
        )
    if rule == "knn":
        return knn_candidates(
            query_vectors, reference_vectors, query_ids, reference_ids, k=int(k), metric=metric, device=device
        )
    raise ValueError(f"{setting} must be 'global' (the official ISC rule) or 'knn', got {rule!r}")
