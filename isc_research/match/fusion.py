"""Score fusion of the matching track (pure numpy).

Two steps, each configurable:

1. `fuse_pairs`: many scores of one (query, reference) pair — one per query view × reference view × model —
   become one score.
   * ``max``: the best view/model (D²LV merged its "choice 2" models by max, RECIPES §5.2).
   * ``sum``: the sum over branches (imgFp summed the match counts of a pair over its global, local and
     crop-local branches, RECIPES §7).
   * ``top2_mean``: the mean of the two highest scores over crops, models and scales (D²LV, RECIPES §5.3
     step 5). A pair with a single score keeps it (source silent on that case).
   * ``mean``: the plain mean (source silent; for comparison).
   Voting (``min_votes`` k, `voted`): keep a pair only if at least k distinct sources returned it — D²LV kept
   a (query-crop, reference) pair only if ≥ 2 of 3 backbones returned it (RECIPES §5.3 step 1; isc-match
   votes per query or per query view, within one pipeline size, before the pairs are fused).
2. `combine`: the descriptor score s_d and the verifier score s_v of a pair become its final score.
   * ``descriptor``: s_d (no verification).
   * ``verifier``: s_v (separate submitted its verifier's score, RECIPES §6; imgFp its SIFT match count, §7).
   * ``weighted``: w_d·s_d + w_v·s_v (source silent).
   * ``boost``: s_d + boost·[s_v ≥ threshold] — descriptor order, verified pairs first (source silent).
   With inlier counts (integers) and cosine s_d ∈ [-1, 1], ``weighted`` with w_v = 1, w_d < 0.5 orders pairs by
   s_v and breaks its ties (e.g. 0 inliers) by s_d.
"""

from __future__ import annotations

import numpy as np

__all__ = ["COMBINE_RULES", "PAIR_RULES", "best_entry", "combine", "fuse_pairs", "voted"]

PAIR_RULES = ("max", "sum", "top2_mean", "mean")
COMBINE_RULES = ("descriptor", "verifier", "weighted", "boost")


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique keys and, for every entry, the index of its key."""
    keys = np.asarray(keys)
    if keys.ndim != 1:
        raise ValueError(f"pair keys must be 1-D (one int per entry), got shape {keys.shape}")
    return np.unique(keys, return_inverse=True)


def fuse_pairs(
    keys: np.ndarray, scores: np.ndarray, rule: str = "max", *, sources: np.ndarray | None = None, min_votes: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fuse the scores of entries sharing a pair key; returns (unique keys, fused scores, votes).

    ``votes`` counts the distinct ``sources`` (e.g. model index) of each pair, or its entries when
    ``sources`` is None; pairs with fewer than ``min_votes`` are dropped.
    """
    if rule not in PAIR_RULES:
        raise ValueError(f"fusion rule {rule!r} is unknown; choose one of {', '.join(PAIR_RULES)}")
    scores = np.asarray(scores, np.float64)
    if len(scores) != len(keys):
        raise ValueError(f"{len(keys)} pair keys but {len(scores)} scores")
    if int(min_votes) < 1:
        raise ValueError(f"min_votes must be >= 1, got {min_votes}")
    unique, inverse = _groups(keys)
    m = len(unique)
    if rule == "max":
        fused = np.full(m, -np.inf)
        np.maximum.at(fused, inverse, scores)
    elif rule in ("sum", "mean"):
        fused = np.bincount(inverse, weights=scores, minlength=m)
        if rule == "mean":
            fused = fused / np.bincount(inverse, minlength=m)
    else:  # top2_mean: entries sorted by (group, descending score); the first two of each group
        order = np.lexsort((-scores, inverse))
        g, s = inverse[order], scores[order]
        starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        counts = np.diff(np.r_[starts, len(g)])
        second = np.where(counts > 1, s[np.minimum(starts + 1, len(s) - 1)], s[starts])
        fused = (s[starts] + second) / 2
    if sources is None:
        votes = np.bincount(inverse, minlength=m)
    else:
        sources = np.asarray(sources)
        if len(sources) != len(scores):
            raise ValueError(f"{len(scores)} scores but {len(sources)} sources")
        _, source_index = np.unique(sources, return_inverse=True)
        distinct = np.unique(inverse * (int(source_index.max(initial=0)) + 1) + source_index)
        votes = np.bincount(distinct // (int(source_index.max(initial=0)) + 1), minlength=m)
    keep = votes >= int(min_votes)
    return unique[keep], fused[keep], votes[keep]


def voted(keys: np.ndarray, sources: np.ndarray | None, min_votes: int) -> np.ndarray:
    """Boolean mask of the entries whose key was returned by at least `min_votes` distinct sources (entries
    when `sources` is None): the vote of `fuse_pairs`, kept at entry level so that the fusion comes after."""
    kept, _, _ = fuse_pairs(keys, np.zeros(len(keys)), "max", sources=sources, min_votes=min_votes)
    return np.isin(keys, kept)


def best_entry(keys: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique keys, index of the highest-scored entry of each key; the first one on ties)."""
    scores = np.asarray(scores, np.float64)
    unique, inverse = _groups(keys)
    if not len(scores):  # e.g. every pair voted out
        return unique, np.zeros(0, np.int64)
    order = np.lexsort((np.arange(len(scores)), -scores, inverse))
    first = np.flatnonzero(np.r_[True, inverse[order][1:] != inverse[order][:-1]])
    return unique, order[first]


def combine(
    descriptor: np.ndarray,
    verifier: np.ndarray | None,
    rule: str,
    *,
    descriptor_weight: float = 1.0,
    verifier_weight: float = 1.0,
    boost: float = 1.0,
    threshold: float = 0.0,
) -> np.ndarray:
    """The final score of each pair from its descriptor score and its verifier score (see the module doc)."""
    if rule not in COMBINE_RULES:
        raise ValueError(f"fusion.combine={rule!r} is unknown; choose one of {', '.join(COMBINE_RULES)}")
    d = np.asarray(descriptor, np.float64)
    if rule == "descriptor":
        return d.copy()
    if verifier is None:
        raise ValueError(f"fusion.combine={rule!r} needs verifier scores; use verifier=none with combine=descriptor")
    v = np.asarray(verifier, np.float64)
    if v.shape != d.shape:
        raise ValueError(f"{len(d)} descriptor scores but {len(v)} verifier scores")
    if not np.isfinite(v).all():
        i = int(np.flatnonzero(~np.isfinite(v))[0])
        raise ValueError(f"the verifier returned a non-finite score ({v[i]}) for pair {i}")
    if rule == "verifier":
        return v.copy()
    if rule == "weighted":
        return descriptor_weight * d + verifier_weight * v
    return d + boost * (v >= threshold)  # boost
