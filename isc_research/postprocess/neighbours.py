"""Exact inner-product neighbours in the training set (faiss brute force, no index copy)."""

from __future__ import annotations

import faiss
import numpy as np

_ROWS_PER_CALL = 16384


def top_k(bank: np.ndarray, x: np.ndarray, k: int, *, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Similarities (n, k) in descending order and indices into `bank` of the k largest x·bank products.

    exclude_self: x is `bank` itself (same rows); row i's own entry is left out of its neighbours.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    available = len(bank) - (1 if exclude_self else 0)
    if k > available:
        raise ValueError(
            f"asked for {k} training neighbours but the training set has only {available} "
            f"(other) descriptors; lower k or use more training images"
        )
    kk = k + 1 if exclude_self else k
    sims = np.empty((len(x), k), np.float32)
    idx = np.empty((len(x), k), np.int64)
    for start in range(0, len(x), _ROWS_PER_CALL):
        block = np.ascontiguousarray(x[start : start + _ROWS_PER_CALL], dtype=np.float32)
        s, i = faiss.knn(block, bank, kk, metric=faiss.METRIC_INNER_PRODUCT)
        if exclude_self:
            own = np.arange(start, start + len(block))[:, None]
            keep = i != own
            keep[keep.sum(axis=1) > k, -1] = False  # self not found (ties): drop the last instead
            s, i = s[keep].reshape(len(block), k), i[keep].reshape(len(block), k)
        sims[start : start + len(block)] = s
        idx[start : start + len(block)] = i
    return sims, idx
