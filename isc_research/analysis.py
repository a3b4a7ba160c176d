"""Error analysis of scored predictions: which pairs are wrong, how scores separate, which edits hurt.

Used by notebooks/03_error_analysis.ipynb and by report.html (isc_research.report_html). Pure numpy on top of
isc_research.metric; the orderings follow the official metric (pooled predictions, descending score, non-matches
first at equal score).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from isc_research.formats import FormatError
from isc_research.metric import GroundTruth, Predictions, check_duplicates, evaluate, pooled_order

__all__ = [
    "EDITS_HEADER",
    "FalsePositive",
    "MissedMatch",
    "QueryEdits",
    "SliceMetrics",
    "breakdown",
    "edit_count_groups",
    "edit_groups",
    "false_positives",
    "is_match",
    "missed_matches",
    "read_query_edits",
    "score_histograms",
]

EDITS_HEADER = ["query_id", "source", "edits", "overlay_box"]


@dataclass(frozen=True)
class QueryEdits:
    """One row of a mini-DISC's query_edits.csv: the edits that made a query, in application order."""

    query_id: str
    source: str  # the reference id it was made from, or "distractor:N"
    edits: tuple[str, ...]
    overlay_box: tuple[int, int, int, int] | None  # pasted content (left, top, right, bottom), overlay edits only


def read_query_edits(path: str | Path) -> dict[str, QueryEdits]:
    """query_edits.csv (written by the mini-DISC builder) → {query_id: QueryEdits}."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(
            path,
            "file not found; the mini-DISC builder writes query_edits.csv next to ground_truth.csv "
            "(real DISC21 folders have none)",
        )
    out: dict[str, QueryEdits] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != EDITS_HEADER:
            raise FormatError(
                path, f"expected the header {','.join(EDITS_HEADER)!r}, got {','.join(header or [])!r}", 1
            )
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != 4:
                raise FormatError(path, f"expected 4 fields {','.join(EDITS_HEADER)!r}, got {len(row)}", line)
            query_id, source, edits, box = (x.strip() for x in row)
            if not query_id or not edits:
                raise FormatError(path, "empty query_id or edits (each query lists at least one edit)", line)
            if query_id in out:
                raise FormatError(path, f"query {query_id!r} is listed twice; keep one row per query", line)
            out[query_id] = QueryEdits(query_id, source, tuple(edits.split("|")), _box(path, line, box))
    return out


def _box(path: Path, line: int, text: str) -> tuple[int, int, int, int] | None:
    if not text:
        return None
    try:
        left, top, right, bottom = (int(v) for v in text.split())
    except ValueError:
        raise FormatError(path, f"overlay_box must be 4 integers 'left top right bottom', got {text!r}", line) from None
    if not (0 <= left < right and 0 <= top < bottom):
        raise FormatError(
            path, f"overlay_box {text!r} is empty or negative (need 0 <= left < right, 0 <= top < bottom)", line
        )
    return left, top, right, bottom


def is_match(gt: GroundTruth, preds: Predictions) -> np.ndarray:
    """Per prediction row: True when (query, reference) is a ground-truth pair."""
    truth = np.array([gt.matches.get(q, "") for q in preds.query_ids.tolist()], dtype=str)
    return (truth == preds.reference_ids) & (truth != "")


@dataclass(frozen=True)
class FalsePositive:
    """A wrong pair among the most confident predictions; `rank` is its 1-based place in the pooled list."""

    query_id: str
    reference_id: str
    score: float
    rank: int
    true_reference_id: str | None  # the query's real match, None for a distractor query


def false_positives(gt: GroundTruth, preds: Predictions, k: int) -> list[FalsePositive]:
    """The k highest-scoring predictions that are not ground-truth pairs, most confident first."""
    check_duplicates(preds)
    y = is_match(gt, preds)
    order = pooled_order(y, preds.scores)
    out = []
    for position, i in enumerate(order.tolist(), start=1):
        if len(out) == k:
            break
        if not y[i]:
            q = str(preds.query_ids[i])
            out.append(
                FalsePositive(q, str(preds.reference_ids[i]), float(preds.scores[i]), position, gt.matches.get(q))
            )
    return out


@dataclass(frozen=True)
class MissedMatch:
    """A ground-truth pair the predictions get wrong: absent, or ranked below another reference of its query."""

    query_id: str
    reference_id: str
    score: float | None  # the pair's score; None when it is not among the predictions
    rank_in_query: int | None  # 1 = the query's top candidate (pessimistic ties); None when absent
    top_reference_id: str | None  # the query's highest-scoring wrong reference, if any
    top_score: float | None


def missed_matches(gt: GroundTruth, preds: Predictions, k: int, threshold: float | None = None) -> list[MissedMatch]:
    """The k hardest missed ground-truth pairs. A pair is missed when it is absent from the predictions,
    outranked by another reference of its query, or (with a threshold, e.g. the one at 90 % precision)
    scored below the threshold. Absent pairs come first (the query with the most confident wrong candidate
    first, queries without predictions last), then the others by ascending score."""
    check_duplicates(preds)
    y = is_match(gt, preds)
    by_query: dict[str, list[int]] = {}
    for i, q in enumerate(preds.query_ids.tolist()):
        by_query.setdefault(q, []).append(i)
    rows = []
    for q, r in gt.matches.items():
        rows_q = by_query.get(q, [])
        wrong = [i for i in rows_q if not y[i]]
        best = max(wrong, key=lambda i: preds.scores[i]) if wrong else None
        top = (str(preds.reference_ids[best]), float(preds.scores[best])) if best is not None else (None, None)
        hit = next((i for i in rows_q if y[i]), None)
        if hit is None:
            rows.append(MissedMatch(q, r, None, None, *top))
            continue
        score = float(preds.scores[hit])
        rank = sum(1 for i in rows_q if preds.scores[i] >= score)  # ties count against the pair
        if rank > 1 or (threshold is not None and score < threshold):
            rows.append(MissedMatch(q, r, score, rank, *top))

    def key(m: MissedMatch):
        if m.score is None:
            return (0, -(m.top_score if m.top_score is not None else -np.inf), m.query_id)
        return (1, m.score, m.query_id)

    return sorted(rows, key=key)[:k]


def score_histograms(
    gt: GroundTruth, preds: Predictions, bins: int | np.ndarray = 30
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(edges, counts of ground-truth pairs, counts of non-matches) over shared bin edges of the scores."""
    y = is_match(gt, preds)
    edges = np.histogram_bin_edges(preds.scores, bins=bins) if len(preds) else np.linspace(0, 1, int(bins) + 1)
    return edges, np.histogram(preds.scores[y], edges)[0], np.histogram(preds.scores[~y], edges)[0]


def edit_groups(edits: Mapping[str, QueryEdits]) -> dict[str, set[str]]:
    """{edit name: ids of the queries it was applied to (alone or with others)}, names sorted."""
    groups: dict[str, set[str]] = {}
    for e in edits.values():
        for name in e.edits:
            groups.setdefault(name, set()).add(e.query_id)
    return dict(sorted(groups.items()))


def edit_count_groups(edits: Mapping[str, QueryEdits]) -> dict[str, set[str]]:
    """{"1 edit": ..., "2 edits": ...}: the queries by how many edits made them."""
    groups: dict[int, set[str]] = {}
    for e in edits.values():
        groups.setdefault(len(e.edits), set()).add(e.query_id)
    return {f"{n} edit{'s' if n > 1 else ''}": groups[n] for n in sorted(groups)}


@dataclass(frozen=True)
class SliceMetrics:
    """Metrics of the evaluated queries of one group (e.g. every query made with a given edit)."""

    group: str
    n_queries: int  # evaluated queries in the group, matched and distractors
    n_matched: int  # of which have a true reference
    recall: float | None  # share of the group's true pairs that are among the predictions at all
    recall_at_rank1: float | None
    uAP: float | None  # µAP of the group's queries alone (its pairs, its distractors' predictions)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def breakdown(gt: GroundTruth, preds: Predictions, groups: Mapping[str, Iterable[str]]) -> list[SliceMetrics]:
    """One SliceMetrics per group of query ids, in the groups' order; ids outside the ground truth are
    ignored (they are not evaluated). Metrics are None for a group without a matched query."""
    check_duplicates(preds)
    y = is_match(gt, preds)
    evaluated = set(gt.query_ids)
    out = []
    for name, ids in groups.items():
        members = set(ids) & evaluated
        slice_gt = gt.restricted(members)
        matched = slice_gt.matches
        if not matched:
            out.append(SliceMetrics(name, len(members), 0, None, None, None))
            continue
        rows = np.isin(preds.query_ids, np.array(sorted(members), dtype=str))
        subset = Predictions(preds.query_ids[rows], preds.reference_ids[rows], preds.scores[rows])
        metrics = evaluate(slice_gt, subset)
        out.append(
            SliceMetrics(
                name,
                len(members),
                len(matched),
                int(y[rows].sum()) / len(matched),
                metrics.recall_at_rank1,
                metrics.uAP,
            )
        )
    return out
