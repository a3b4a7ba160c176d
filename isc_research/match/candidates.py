"""Candidate pairs from view descriptors: the top-k references of every query view (whole image: k, crop: k_crops),
searched over all reference views by cosine similarity (or by inner product of post-processed descriptors,
e.g. score-normalised ones); one entry per (query view, reference image)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from isc_research.match.views import ViewDescriptors
from isc_research.postprocess.base import l2_normalize
from isc_research.search import knn_rows

__all__ = ["Entries", "view_candidates"]


@dataclass(frozen=True, eq=False)
class Entries:
    """Scored (query view, reference view) hits; `query`/`reference` index the records, `*_view` the views."""

    query: np.ndarray
    reference: np.ndarray
    score: np.ndarray
    query_view: np.ndarray
    reference_view: np.ndarray
    source: np.ndarray  # model index

    @classmethod
    def concatenate(cls, parts: list[Entries]) -> Entries:
        return cls(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("query", "reference", "score", "query_view", "reference_view", "source")
            )
        )

    def select(self, keep: np.ndarray) -> Entries:
        """The entries where the boolean mask `keep` is true."""
        return Entries(
            *(getattr(self, f)[keep] for f in ("query", "reference", "score", "query_view", "reference_view", "source"))
        )

    def __len__(self) -> int:
        return len(self.query)


def view_candidates(
    queries: ViewDescriptors,
    references: ViewDescriptors,
    *,
    k: int,
    k_crops: int,
    crop_penalty: float = 0.0,
    source: int = 0,
    batch_size: int = 4096,
    search_device: str | None = None,
    metric: str = "cosine",
    crops_vs_crops: bool = True,
) -> Entries:
    """Top-k distinct references per query view (k for whole queries, k_crops for crops; 0 = none), scored by
    the similarity of the best reference view: `metric` cosine (the vectors L2-normalised first) or ip (the
    vectors as given: a score-normalisation chain's output, RECIPES §1.5). The scores of query views marked
    `penalised` (every crop unless its provider says otherwise) are lowered by `crop_penalty` (D²LV, RECIPES
    §5.3 step 3). `crops_vs_crops` false: query crops search whole references only, whole queries every
    reference view (D²LV's two branches, augmented queries × original references and original queries ×
    augmented references, RECIPES §5.3). The view kNN is isc_research.search's (exact, ties to the lower reference
    view; `search_device`: auto | cpu | cuda)."""

    if k < 0 or k_crops < 0:
        raise ValueError(f"candidates.k and candidates.k_crops must be >= 0, got {k}, {k_crops}")
    if metric not in ("cosine", "ip"):
        raise ValueError(f"candidate metric must be cosine or ip, got {metric!r}")
    if metric == "cosine":
        q, r = l2_normalize(queries.vectors), l2_normalize(references.vectors)
    else:
        q, r = queries.vectors.astype(np.float32, copy=False), references.vectors.astype(np.float32, copy=False)
    penalised = ~queries.whole if queries.penalised is None else queries.penalised
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"query views have {q.shape[1]} dims but reference views {r.shape[1]}")
    n_refs = int(references.owner.max()) + 1 if len(references) else 0
    want = np.where(queries.whole, k, k_crops)
    k_max = int(want.max(initial=0))
    if k_max == 0 or n_refs == 0:
        empty = np.zeros(0, np.int64)
        return Entries(empty, empty, np.zeros(0), empty, empty, empty)
    all_views = np.arange(len(r))
    groups = (
        [(np.ones(len(q), bool), all_views)]
        if crops_vs_crops
        else [(queries.whole, all_views), (~queries.whole, np.flatnonzero(references.whole))]
    )
    parts = []
    for members, ref_views in groups:
        per = int(np.bincount(references.owner[ref_views]).max()) if len(ref_views) else 1
        r_group = r if len(ref_views) == len(r) else r[ref_views]
        depth = min(len(ref_views), k_max * per)  # enough reference views for k_max distinct references
        candidates = np.flatnonzero(members & (want > 0))
        for start in range(0, len(candidates), batch_size):
            rows = candidates[start : start + batch_size]
            sims, found = knn_rows(q[rows], r_group, k=depth, metric="ip", device=search_device)
            labels = ref_views[found]
            owners = references.owner[labels]
            # the first (best) hit of every reference in each row, then the first want[row] of those
            order = np.argsort(owners, axis=1, kind="stable")
            sorted_owners = np.take_along_axis(owners, order, axis=1)
            first_sorted = np.ones_like(sorted_owners, bool)
            first_sorted[:, 1:] = sorted_owners[:, 1:] != sorted_owners[:, :-1]
            first = np.empty_like(first_sorted)
            np.put_along_axis(first, order, first_sorted, axis=1)
            keep = first & (np.cumsum(first, axis=1) <= want[rows][:, None])
            i, j = np.nonzero(keep)
            qv = rows[i]
            score = sims[i, j].astype(np.float64) - np.where(penalised[qv], crop_penalty, 0.0)
            parts.append(
                Entries(queries.owner[qv], owners[i, j], score, qv, labels[i, j], np.full(len(qv), source, np.int64))
            )
    return Entries.concatenate(parts) if parts else view_candidates(queries, references, k=0, k_crops=0)
