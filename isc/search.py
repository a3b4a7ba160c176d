"""Exact candidate generation: the official global top-N rule and per-query kNN.

Scores follow the ISC convention (higher = more similar): ``-squared_L2`` for ``metric="l2"`` (as faiss
``IndexFlatL2``) and the inner product for ``metric="ip"`` (``IndexFlatIP``). The global rule runs on
blocked float32 GEMMs with a rising cut-off (see `global_candidates`); kNN uses faiss' brute-force ``knn``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from isc.metric import Predictions, _as_ids

__all__ = ["global_candidates", "knn_candidates"]

_METRICS = ("l2", "ip")


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


def _prepare(
    query_vectors: object, reference_vectors: object, query_ids: object, reference_ids: object, metric: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
    q = _vectors(query_vectors, "query_vectors")
    r = _vectors(reference_vectors, "reference_vectors")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"query and reference dimensions differ: {q.shape[1]} vs {r.shape[1]}")
    if len(r) == 0 or r.shape[1] == 0:
        raise ValueError(f"reference_vectors is empty (shape {r.shape})")
    return q, r, _ids(query_ids, len(q), "query_ids"), _ids(reference_ids, len(r), "reference_ids")


def _search(
    reference: np.ndarray, x: np.ndarray, k: int, metric: str, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """kNN of every row of x in batches; returns (scores, labels), each (len(x), k).

    faiss' brute-force ``knn`` searches the reference array in place: unlike an ``IndexFlat`` it keeps no
    second copy of the references (1 GB for DISC21's 1M × 256 float32).
    """
    import faiss  # only kNN needs it

    faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    scores = np.empty((len(x), k), np.float32)
    labels = np.empty((len(x), k), np.int64)
    for start in range(0, len(x), batch_size):
        d, i = faiss.knn(x[start : start + batch_size], reference, k, metric=faiss_metric)
        scores[start : start + batch_size] = -d if metric == "l2" else d
        labels[start : start + batch_size] = i
    return scores, labels


def _top(s: np.ndarray, q: np.ndarray, r: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if len(s) > n:
        keep = np.argpartition(-s, n - 1)[:n]
        s, q, r = s[keep], q[keep], r[keep]
    return s, q, r


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


class _GlobalTop:
    """The `n` best scores seen so far over score tiles, with a rising lower bound `tau` on the final n-th best:
    an entry below it can never enter the list, so each tile costs one comparison pass plus its few hits."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.tau = -np.inf
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.size = 0

    def add(self, tile: np.ndarray, q0: int, r0: int, mask: np.ndarray, pool: ThreadPoolExecutor, threads: int) -> None:
        if self.tau == -np.inf and tile.size > self.n:  # the first tile alone fills the list:
            values = tile.ravel().copy()                 # its n-th best is a lower bound of the final one
            values.partition(tile.size - self.n)
            self.tau = float(values[tile.size - self.n])
            del values
        # rows split between threads (numpy releases the GIL): the comparison pass is the only other full pass
        bounds = np.linspace(0, len(tile), threads + 1, dtype=int)
        parts = [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        hits = list(pool.map(lambda ab: self._scan(tile[ab[0]:ab[1]], mask[ab[0]:ab[1]], ab[0]), parts))
        flat = np.concatenate([h for h in hits if len(h)]) if any(len(h) for h in hits) else None
        if flat is None:
            return
        rows, cols = np.divmod(flat, tile.shape[1])
        self.parts.append((tile.ravel()[flat], rows + q0, cols + r0))
        self.size += len(flat)
        if self.size > 2 * self.n:
            self._trim()

    def _scan(self, tile: np.ndarray, mask: np.ndarray, row0: int) -> np.ndarray:
        np.greater_equal(tile, self.tau, out=mask)
        return np.flatnonzero(mask) + row0 * tile.shape[1]  # much faster than a 2-D nonzero on a sparse mask

    def _trim(self) -> None:
        s, q, r = (np.concatenate(x) for x in zip(*self.parts)) if self.parts else (np.empty(0),) * 3
        s, q, r = _top(s, q, r, self.n)
        self.parts = [(s, q, r)]
        self.size = len(s)
        if self.size == self.n:
            self.tau = max(self.tau, float(s.min()))

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._trim()
        return self.parts[0] if self.parts else (np.empty(0, np.float32), np.empty(0, np.int64), np.empty(0, np.int64))


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


def global_candidates(
    query_vectors: object,
    reference_vectors: object,
    query_ids: object,
    reference_ids: object,
    *,
    num_results: int | None = None,
    metric: str = "l2",
    batch_size: int = 1024,
    reference_block: int = 16384,
) -> Predictions:
    """The ``num_results`` (default 10 × #queries) globally best (query, reference) pairs.

    Exact brute force (up to ties at the cut-off) at the speed of the matrix multiply: reference blocks ×
    query batches of scores come from one float32 GEMM each (squared L2 folded into it by two extra
    dimensions, as faiss computes it: ‖q‖² + ‖r‖² − 2q·r); a running lower bound on the final cut-off keeps
    only the few entries of each tile that can still enter the list; the returned scores are then recomputed
    from the vectors of each kept pair (exact in float32). Memory: the inputs, one augmented
    reference block and one (batch_size × reference_block) tile (64 MB by default); the references are not
    copied.
    """
    q, r, qids, rids = _prepare(query_vectors, reference_vectors, query_ids, reference_ids, metric)
    _check_batch_size(batch_size)
    _check_batch_size(reference_block)
    nq, nr = len(q), len(r)
    n_res = 10 * nq if num_results is None else num_results
    if not isinstance(n_res, int | np.integer) or n_res < 0:
        raise ValueError(f"num_results must be a non-negative integer, got {num_results!r}")
    n_res = min(int(n_res), nq * nr)
    if n_res == 0:
        return Predictions.from_rows([])
    top = _GlobalTop(n_res)
    queries = _augmented(q, metric, "query")
    tile_buffer = np.empty(min(batch_size, nq) * min(reference_block, nr), np.float32)
    mask_buffer = np.empty(len(tile_buffer), bool)
    threads = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for r0 in range(0, nr, reference_block):
            block = _augmented(r[r0 : r0 + reference_block], metric, "reference")
            for q0 in range(0, nq, batch_size):
                rows = queries[q0 : q0 + batch_size]
                size = len(rows) * len(block)
                tile = tile_buffer[:size].reshape(len(rows), len(block))
                np.matmul(rows, block.T, out=tile)
                top.add(tile, q0, r0, mask_buffer[:size].reshape(tile.shape), pool, threads)
    _, pool_q, pool_r = top.result()
    pool_s = _pair_scores(q, r, pool_q, pool_r, metric)
    order = np.lexsort((pool_r, pool_q, -pool_s))
    return Predictions(qids[pool_q[order]], rids[pool_r[order]], pool_s[order].astype(np.float64))


def knn_candidates(
    query_vectors: object,
    reference_vectors: object,
    query_ids: object,
    reference_ids: object,
    *,
    k: int = 10,
    metric: str = "l2",
    batch_size: int = 4096,
) -> Predictions:
    """The k nearest references of every query (k clipped to the number of references)."""
    q, r, qids, rids = _prepare(query_vectors, reference_vectors, query_ids, reference_ids, metric)
    _check_batch_size(batch_size)
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = min(int(k), len(r))
    if len(q) == 0:
        return Predictions.from_rows([])
    scores, labels = _search(r, q, k, metric, batch_size)
    return Predictions(np.repeat(qids, k), rids[labels.ravel()], scores.ravel().astype(np.float64))
