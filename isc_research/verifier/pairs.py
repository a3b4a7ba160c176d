"""Which images the verifier is trained and validated on: anchors (a query and its true reference) with
their negative candidates (hard: nearest non-matching images by a descriptor model; or random)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from isc_research.data.records import ImageRecord


@dataclass(frozen=True)
class Anchor:
    """A training query with its true reference. `augment`: the query is an augmented copy of `reference`
    (a training image); otherwise `query` is a real query image (a held-out ground-truth pair).
    `negatives`: candidate non-matching images (hard negatives, nearest first), or () for random ones."""

    query: ImageRecord
    reference: ImageRecord
    augment: bool
    negatives: tuple[ImageRecord, ...] = ()


@dataclass(frozen=True)
class ValidationPairs:
    """Scored (query, candidate) pairs: per query its true reference (if it has one) and non-matching
    candidates; `labels` 1 for the true pairs; `query_ids` are all validation queries (the µAP's ground truth)."""

    queries: list[ImageRecord]
    references: list[ImageRecord]
    labels: np.ndarray
    query_ids: tuple[str, ...]
    matches: dict[str, str]

    def __len__(self) -> int:
        return len(self.labels)


def random_negatives(n_queries: int, pool_size: int, excluded: list[set[int]], k: int, seed: int) -> list[list[int]]:
    """For each query, `k` distinct random pool indices outside its `excluded` set (fewer if the pool is small)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_queries):
        allowed = np.setdiff1d(np.arange(pool_size), np.fromiter(excluded[i], int, len(excluded[i])))
        out.append(rng.choice(allowed, size=min(k, len(allowed)), replace=False).tolist())
    return out


def nearest_negatives(
    query_vectors: np.ndarray, pool_vectors: np.ndarray, excluded: list[set[int]], k: int, batch_size: int = 1024
) -> list[list[int]]:
    """For each query, the `k` pool indices of highest descriptor similarity (inner product of L2-normalised
    descriptors), skipping its `excluded` ones (itself, its true reference), nearest first. Exact brute force,
    `batch_size` queries at a time (memory: batch_size × pool scores)."""
    pool = pool_vectors.astype(np.float32)
    width = min(len(pool), k + max((len(e) for e in excluded), default=0))
    out: list[list[int]] = []
    for start in range(0, len(query_vectors), batch_size):
        scores = query_vectors[start : start + batch_size].astype(np.float32) @ pool.T
        top = np.argsort(-scores, axis=1, kind="stable")[:, :width]
        out += [[int(j) for j in row if int(j) not in excluded[start + i]][:k] for i, row in enumerate(top)]
    return out


def validation_pairs(
    queries: list[ImageRecord],
    references: list[ImageRecord],
    matches: dict[str, str],
    query_ids: tuple[str, ...],
    negatives: list[list[int]],
) -> ValidationPairs:
    """Per query: its true reference (label 1, if any) then its negative candidates (references by index)."""
    by_id = {r.id: r for r in references}
    q_out, r_out, labels = [], [], []
    for query, candidates in zip(queries, negatives, strict=True):
        if query.id in matches:
            q_out.append(query), r_out.append(by_id[matches[query.id]]), labels.append(1)
        for j in candidates:
            if references[j].id == matches.get(query.id):
                raise ValueError(f"negative candidate {references[j].id} is the true reference of {query.id}")
            q_out.append(query), r_out.append(references[j]), labels.append(0)
    return ValidationPairs(q_out, r_out, np.asarray(labels, np.int64), tuple(query_ids), dict(matches))
