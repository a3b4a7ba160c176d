"""Exact ISC2021 micro-average precision (µAP) and companion metrics, in plain numpy.

Implements the definition of RECIPES §1.3: the predictions of all queries are pooled, sorted
by descending score with non-matches first at equal score (pessimistic ties), and
µAP = Σ_k (R[k] − R[k−1]) · P[k] with R = tp / (number of ground-truth pairs), no interpolation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "EVALUATION_METRICS",
    "GroundTruth",
    "Metrics",
    "Predictions",
    "check_duplicates",
    "evaluate",
    "pooled_order",
    "precision_recall",
]


@dataclass(frozen=True)
class GroundTruth:
    """Evaluated queries (matched and distractors, file order) and their single true reference."""

    query_ids: tuple[str, ...]
    matches: dict[str, str]

    def __post_init__(self) -> None:
        if len(set(self.query_ids)) != len(self.query_ids):
            seen: set[str] = set()
            dup = next(q for q in self.query_ids if q in seen or seen.add(q))
            raise ValueError(f"ground truth lists query id {dup!r} more than once")
        bad = [q for q in self.query_ids if not isinstance(q, str) or not q]
        if bad:
            raise ValueError(f"ground truth query ids must be non-empty strings, got {bad[0]!r}")
        known = set(self.query_ids)
        for q, r in self.matches.items():
            if q not in known:
                raise ValueError(f"matched query {q!r} is not among the ground-truth query ids")
            if not isinstance(r, str) or not r:
                raise ValueError(f"reference id of query {q!r} must be a non-empty string, got {r!r}")

    def restricted(self, query_ids: Iterable[str]) -> GroundTruth:
        """The ground truth of the queries among `query_ids` (in file order; itself when they cover it): what a
        partial run evaluated (limited validation, unreadable or held-out queries, a slice)."""
        keep = set(query_ids)
        if keep.issuperset(self.query_ids):
            return self
        return GroundTruth(
            tuple(q for q in self.query_ids if q in keep), {q: r for q, r in self.matches.items() if q in keep}
        )

    @property
    def n_pairs(self) -> int:
        """Number of (query, reference) ground-truth pairs: the recall denominator."""
        return len(self.matches)

    @classmethod
    def from_pairs(
        cls, query_ids: Iterable[str], matches: Mapping[str, str] | Iterable[tuple[str, str]]
    ) -> GroundTruth:
        """Build from all evaluated query ids and a mapping (or iterable of pairs) query -> reference."""
        pairs = matches.items() if isinstance(matches, Mapping) else matches
        out: dict[str, str] = {}
        for q, r in pairs:
            if q in out:
                raise ValueError(f"query {q!r} has more than one ground-truth reference")
            out[q] = r
        return cls(tuple(query_ids), out)


def _as_ids(values: object, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.size == 0:
        return np.zeros(0, dtype="<U1")
    if arr.dtype.kind == "O" and isinstance(arr.flat[0], bytes):
        arr = arr.astype("S")
    if arr.dtype.kind == "S":
        try:
            arr = arr.astype(str)  # fast path for ASCII ids
        except UnicodeDecodeError:
            arr = np.char.decode(arr, "utf-8")
    elif arr.dtype.kind == "O":
        arr = arr.astype(str)
    if arr.dtype.kind != "U":
        raise ValueError(f"{name} must hold strings, got dtype {arr.dtype}")
    return arr


@dataclass(frozen=True, eq=False)
class Predictions:
    """Scored candidate pairs, one row each; a higher score means a more confident match."""

    query_ids: np.ndarray
    reference_ids: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        q = _as_ids(self.query_ids, "query_ids")
        r = _as_ids(self.reference_ids, "reference_ids")
        s = np.asarray(self.scores, dtype=np.float64)
        if q.ndim != 1 or r.ndim != 1 or s.ndim != 1 or not len(q) == len(r) == len(s):
            raise ValueError(
                "query_ids, reference_ids and scores must be 1-D and of equal length, got shapes "
                f"{q.shape}, {r.shape}, {s.shape}"
            )
        if not np.isfinite(s).all():
            i = int(np.flatnonzero(~np.isfinite(s))[0])
            raise ValueError(f"score of prediction ({str(q[i])!r}, {str(r[i])!r}) is not finite: {s[i]}")
        object.__setattr__(self, "query_ids", q)
        object.__setattr__(self, "reference_ids", r)
        object.__setattr__(self, "scores", s)

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, str, float]]) -> Predictions:
        """Build from (query_id, reference_id, score) tuples."""
        rows = list(rows)
        if not rows:
            return cls(np.zeros(0, "<U1"), np.zeros(0, "<U1"), np.zeros(0))
        q, r, s = zip(*rows, strict=True)
        return cls(np.array(q, dtype=str), np.array(r, dtype=str), np.array(s, dtype=np.float64))

    @classmethod
    def concatenate(cls, parts: Sequence[Predictions]) -> Predictions:
        """Stack several prediction sets (e.g. per-shard outputs) into one."""
        parts = list(parts)
        if not parts:
            return cls.from_rows([])
        return cls(
            np.concatenate([p.query_ids for p in parts]),
            np.concatenate([p.reference_ids for p in parts]),
            np.concatenate([p.scores for p in parts]),
        )


# The metrics an evaluation reports, as Metrics fields: logged as `val/<name>` (and `init/`), in metrics.json,
# and the names `optimized_metric` may use (isc_research.config.check_optimized_metric).
EVALUATION_METRICS = ("uAP", "recall_at_p90", "recall_at_rank1", "recall_at_rank10")


@dataclass(frozen=True)
class Metrics:
    """Result of :func:`evaluate`; ``recall_at_p90`` is None when precision never reaches 0.9."""

    uAP: float
    recall_at_p90: float | None
    threshold_at_p90: float | None
    recall_at_rank1: float
    recall_at_rank10: float
    n_predictions: int
    n_gt_pairs: int

    def to_dict(self) -> dict:
        """JSON-ready dict keyed by the field names."""
        return asdict(self)


def _string_hash(ids: np.ndarray) -> np.ndarray:
    """Fast 64-bit hash of fixed-width unicode ids (collisions are resolved by the caller)."""
    chars = np.ascontiguousarray(ids).view(np.uint32).reshape(len(ids), -1)
    h = np.zeros(len(ids), np.uint64)
    for c in range(chars.shape[1]):
        h = (h * np.uint64(1_000_003)) ^ chars[:, c].astype(np.uint64)
    return h


def _duplicates(query_ids: np.ndarray, reference_ids: np.ndarray) -> tuple[int, int, int, int] | None:
    """Two rows holding the same (query, reference), its number of occurrences, #duplicated pairs."""
    if len(query_ids) < 2:
        return None
    hq, hr = _string_hash(query_ids), _string_hash(reference_ids)
    order = np.lexsort((hr, hq))  # groups rows with equal (query, reference) hashes together
    hq, hr = hq[order], hr[order]
    same = (hq[1:] == hq[:-1]) & (hr[1:] == hr[:-1])
    a, b = order[:-1][same], order[1:][same]  # only rows with equal hashes need a string check
    if not ((query_ids[a] == query_ids[b]) & (reference_ids[a] == reference_ids[b])).all():
        # hash collision: equal pairs may not be adjacent, sort exactly
        by_ref = np.argsort(reference_ids, kind="stable")
        order = by_ref[np.argsort(query_ids[by_ref], kind="stable")]
        q, r = query_ids[order], reference_ids[order]
        same = (q[1:] == q[:-1]) & (r[1:] == r[:-1])
    if not same.any():
        return None
    j = int(np.flatnonzero(same)[0])
    run_end = j + 1
    while run_end < len(same) and same[run_end]:
        run_end += 1
    n_dup_pairs = int(np.count_nonzero(same & np.r_[True, ~same[:-1]]))
    return int(order[j]), int(order[j + 1]), run_end - j + 1, n_dup_pairs


def check_duplicates(preds: Predictions) -> None:
    """Raise ValueError if some (query, reference) pair is predicted more than once."""
    found = _duplicates(preds.query_ids, preds.reference_ids)
    if found is not None:
        i, _, occurrences, n_dup = found
        raise ValueError(
            f"predictions contain duplicates: {n_dup} (query, reference) pair(s) occur more than once, "
            f"e.g. ({str(preds.query_ids[i])!r}, {str(preds.reference_ids[i])!r}) occurs {occurrences} times; "
            "keep one row per pair"
        )


def _labels(gt: GroundTruth, preds: Predictions) -> tuple[np.ndarray, np.ndarray]:
    """Per prediction: index of its query in sorted GT ids, and whether it is a GT pair."""
    if gt.n_pairs == 0:
        raise ValueError("ground truth has no matched pairs; µAP is undefined")
    gt_q = np.array(gt.query_ids, dtype=str)
    order = np.argsort(gt_q)
    gt_sorted = gt_q[order]
    gt_ref = np.array([gt.matches.get(q, "") for q in gt_sorted.tolist()], dtype=str)
    pq = preds.query_ids
    idx = np.searchsorted(gt_sorted, pq)
    idx_c = np.minimum(idx, len(gt_sorted) - 1)
    unknown = gt_sorted[idx_c] != pq
    if unknown.any():
        bad = np.unique(pq[unknown])
        raise ValueError(
            f"predictions use {len(bad)} query id(s) that are not in the ground truth, "
            f"e.g. {str(bad[0])!r} ({int(unknown.sum())} prediction rows); "
            "predict only for the evaluated queries"
        )
    is_match = (gt_ref[idx_c] == preds.reference_ids) & (gt_ref[idx_c] != "")
    return idx_c, is_match


def pooled_order(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Row order of the pooled predictions: descending score; at equal score non-matches (y=0) first."""
    return np.lexsort((y, -scores))


def _pr_from_labels(
    y: np.ndarray, scores: np.ndarray, n_pairs: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    order = pooled_order(y, scores)
    ys = y[order]
    tp = np.cumsum(ys, dtype=np.int64)
    precision = tp / np.arange(1, len(ys) + 1)
    recall = tp / n_pairs
    return precision, recall, scores[order], ys


def precision_recall(gt: GroundTruth, preds: Predictions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and score at every rank of the pooled, pessimistically sorted predictions."""
    _, y = _labels(gt, preds)
    check_duplicates(preds)
    precision, recall, scores, _ = _pr_from_labels(y, preds.scores, gt.n_pairs)
    return precision, recall, scores


def _rank_recalls(qidx: np.ndarray, y: np.ndarray, scores: np.ndarray, n_pairs: int) -> tuple[float, float]:
    """Recall@rank1/10: rank of a GT pair = #(its query's predictions with score ≥ its score) − 1."""
    if not y.any():
        return 0.0, 0.0
    _, level = np.unique(scores, return_inverse=True)  # integer score levels, ties share a level
    m = int(level.max()) + 1
    key = qidx.astype(np.int64) * m + (m - 1 - level)  # sorts by query, then descending score
    sorted_key = np.sort(key)
    hits = np.flatnonzero(y)
    count = np.searchsorted(sorted_key, key[hits], "right") - np.searchsorted(
        sorted_key, qidx[hits].astype(np.int64) * m, "left"
    )
    rank = count - 1
    return float(np.count_nonzero(rank < 1)) / n_pairs, float(np.count_nonzero(rank < 10)) / n_pairs


def evaluate(gt: GroundTruth, preds: Predictions) -> Metrics:
    """Score predictions against the ground truth (µAP, recall@P90, recall@rank1/10)."""
    qidx, y = _labels(gt, preds)
    check_duplicates(preds)
    n = gt.n_pairs
    if len(preds) == 0:
        return Metrics(0.0, None, None, 0.0, 0.0, 0, n)
    precision, recall, scores, ys = _pr_from_labels(y, preds.scores, n)
    uap = float(precision[ys].sum() / n)  # == Σ (R[k] − R[k−1]) · P[k]
    ok = np.flatnonzero(precision >= 0.9)
    if len(ok):
        best = ok[np.argmax(recall[ok])]  # first rank reaching the best recall
        r_p90, t_p90 = float(recall[best]), float(scores[best])
    else:
        r_p90 = t_p90 = None
    r1, r10 = _rank_recalls(qidx, y, preds.scores, n)
    return Metrics(uap, r_p90, t_p90, r1, r10, len(preds), n)
