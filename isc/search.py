"""Candidate generation with exact faiss search: the official global top-N rule and per-query kNN.

Scores follow the ISC convention (higher = more similar): ``-squared_L2`` for ``metric="l2"``
(faiss ``IndexFlatL2``) and the inner product for ``metric="ip"`` (``IndexFlatIP``).
"""

from __future__ import annotations

import math

import faiss
import numpy as np

from isc.metric import Predictions, _as_ids

__all__ = ["global_candidates", "knn_candidates"]

_METRICS = ("l2", "ip")
_MAX_BLOCK = 1 << 22  # result entries (query rows × k) held per faiss call during re-searches


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


def _index(reference: np.ndarray, metric: str) -> faiss.Index:
    index = faiss.IndexFlatL2(reference.shape[1]) if metric == "l2" else faiss.IndexFlatIP(reference.shape[1])
    index.add(reference)
    return index


def _search(
    index: faiss.Index, x: np.ndarray, k: int, metric: str, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """kNN of every row of x in batches; returns (scores, labels), each (len(x), k)."""
    scores = np.empty((len(x), k), np.float32)
    labels = np.empty((len(x), k), np.int64)
    for start in range(0, len(x), batch_size):
        d, i = index.search(x[start : start + batch_size], k)
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


def global_candidates(
    query_vectors: object,
    reference_vectors: object,
    query_ids: object,
    reference_ids: object,
    *,
    num_results: int | None = None,
    metric: str = "l2",
    batch_size: int = 4096,
) -> Predictions:
    """The ``num_results`` (default 10 × #queries) globally best (query, reference) pairs.

    Exact (as brute force, up to ties at the cut-off) without the full distance matrix: a kNN pass
    with a moderate k keeps a global top list; any query whose k-th neighbour still beats the final
    cut-off is searched again with k doubled until its unseen neighbours cannot enter the list.
    """
    q, r, qids, rids = _prepare(query_vectors, reference_vectors, query_ids, reference_ids, metric)
    _check_batch_size(batch_size)
    nq, nr = len(q), len(r)
    n_res = 10 * nq if num_results is None else num_results
    if not isinstance(n_res, int | np.integer) or n_res < 0:
        raise ValueError(f"num_results must be a non-negative integer, got {num_results!r}")
    n_res = min(int(n_res), nq * nr)
    if n_res == 0:
        return Predictions.from_rows([])
    index = _index(r, metric)

    k0 = min(nr, n_res, max(32, 2 * math.ceil(n_res / nq)))
    k_used = np.full(nq, k0, np.int64)
    kth = np.empty(nq, np.float32)  # score of each query's k-th (last retrieved) neighbour
    pool_s, pool_q, pool_r = np.empty(0, np.float32), np.empty(0, np.int64), np.empty(0, np.int64)

    def add(rows: np.ndarray, k: int, rows_per_call: int) -> None:
        nonlocal pool_s, pool_q, pool_r
        for start in range(0, len(rows), rows_per_call):
            sel = rows[start : start + rows_per_call]
            s, lab = _search(index, q[sel], k, metric, rows_per_call)
            kth[sel] = s[:, -1]
            pool_s, pool_q, pool_r = _top(
                np.concatenate([pool_s, s.ravel()]),
                np.concatenate([pool_q, np.repeat(sel, k)]),
                np.concatenate([pool_r, lab.ravel()]),
                n_res,
            )

    add(np.arange(nq), k0, batch_size)
    while True:
        cutoff = pool_s.min() if len(pool_s) == n_res else -np.inf
        todo = np.flatnonzero((k_used < nr) & (kth > cutoff))
        if len(todo) == 0:
            break
        keep = ~np.isin(pool_q, todo)  # the re-search replaces these queries' entries
        pool_s, pool_q, pool_r = pool_s[keep], pool_q[keep], pool_r[keep]
        k_used[todo] = np.minimum(nr, 2 * k_used[todo])
        for k in np.unique(k_used[todo]):
            rows = todo[k_used[todo] == k]
            add(rows, int(k), max(1, min(batch_size, _MAX_BLOCK // int(k))))

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
    scores, labels = _search(_index(r, metric), q, k, metric, batch_size)
    return Predictions(np.repeat(qids, k), rids[labels.ravel()], scores.ravel().astype(np.float64))
