"""isc_research.analysis against hand-computed cases and plain-loop references."""

from __future__ import annotations

import numpy as np
import pytest

from isc_research.analysis import (
    FalsePositive,
    MissedMatch,
    QueryEdits,
    breakdown,
    edit_count_groups,
    edit_groups,
    false_positives,
    is_match,
    missed_matches,
    read_query_edits,
    score_histograms,
)
from isc_research.formats import FormatError
from isc_research.metric import GroundTruth, Predictions, evaluate

# Q1→R1, Q2→R2, Q3→R3 (never predicted), Q4 a distractor.
GT = GroundTruth.from_pairs(["Q1", "Q2", "Q3", "Q4"], {"Q1": "R1", "Q2": "R2", "Q3": "R3"})
PREDS = Predictions.from_rows(
    [
        ("Q1", "R1", 0.9),  # match
        ("Q4", "R5", 0.8),  # distractor
        ("Q2", "R1", 0.7),  # wrong reference, outranks Q2's true pair
        ("Q2", "R2", 0.6),  # match, 2nd of its query
        ("Q1", "R9", 0.5),
        ("Q4", "R2", 0.6),  # ties with (Q2, R2): the non-match goes first
    ]
)
EDITS = {
    "Q1": QueryEdits("Q1", "R1", ("crop",), None),
    "Q2": QueryEdits("Q2", "R2", ("crop", "jpeg"), None),
    "Q3": QueryEdits("Q3", "R3", ("blur",), None),
    "Q4": QueryEdits("Q4", "distractor:0", ("jpeg",), (1, 2, 3, 4)),
}


def test_is_match():
    assert is_match(GT, PREDS).tolist() == [True, False, False, True, False, False]


def test_false_positives_in_pooled_order_with_pessimistic_ties():
    # pooled order: Q1R1 .9 ✓, Q4R5 .8, Q2R1 .7, Q4R2 .6 (tie: non-match first), Q2R2 .6 ✓, Q1R9 .5
    assert false_positives(GT, PREDS, 3) == [
        FalsePositive("Q4", "R5", 0.8, 2, None),
        FalsePositive("Q2", "R1", 0.7, 3, "R2"),
        FalsePositive("Q4", "R2", 0.6, 4, None),
    ]
    assert [fp.rank for fp in false_positives(GT, PREDS, 10)] == [2, 3, 4, 6]
    assert false_positives(GT, PREDS, 0) == []


def test_missed_matches():
    # Q3 absent (no prediction at all), Q2 outranked by R1; Q1 is ranked first: not missed without a threshold
    assert missed_matches(GT, PREDS, 10) == [
        MissedMatch("Q3", "R3", None, None, None, None),
        MissedMatch("Q2", "R2", 0.6, 2, "R1", 0.7),
    ]
    # at a threshold above its score, Q1's correct top-1 is missed too (after Q2: ascending score)
    assert missed_matches(GT, PREDS, 10, threshold=0.95)[1:] == [
        MissedMatch("Q2", "R2", 0.6, 2, "R1", 0.7),
        MissedMatch("Q1", "R1", 0.9, 1, "R9", 0.5),
    ]
    assert len(missed_matches(GT, PREDS, 1)) == 1


def test_missed_matches_orders_absent_pairs_by_their_most_confident_wrong_candidate():
    gt = GroundTruth.from_pairs(["A", "B", "C"], {"A": "RA", "B": "RB", "C": "RC"})
    preds = Predictions.from_rows([("A", "X", 0.2), ("B", "Y", 0.7), ("B", "Z", 0.1)])
    assert [(m.query_id, m.top_reference_id, m.top_score) for m in missed_matches(gt, preds, 5)] == [
        ("B", "Y", 0.7),
        ("A", "X", 0.2),
        ("C", None, None),
    ]


def test_rank_in_query_counts_ties_against_the_pair():
    gt = GroundTruth.from_pairs(["A"], {"A": "R"})
    preds = Predictions.from_rows([("A", "X", 0.5), ("A", "R", 0.5), ("A", "Y", 0.1)])
    assert missed_matches(gt, preds, 5) == [MissedMatch("A", "R", 0.5, 2, "X", 0.5)]


def test_score_histograms_share_edges():
    edges, matches, others = score_histograms(GT, PREDS, np.array([0.4, 0.6, 0.8, 1.0]))
    assert edges.tolist() == [0.4, 0.6, 0.8, 1.0]
    assert matches.tolist() == [0, 1, 1]  # .6, .9
    assert others.tolist() == [1, 2, 1]  # .5 | .6 .7 | .8
    edges, matches, others = score_histograms(GT, PREDS, 4)
    assert len(edges) == 5 and edges[0] == 0.5 and edges[-1] == 0.9
    assert matches.sum() + others.sum() == len(PREDS)


def test_edit_groups():
    assert edit_groups(EDITS) == {"blur": {"Q3"}, "crop": {"Q1", "Q2"}, "jpeg": {"Q2", "Q4"}}
    assert edit_count_groups(EDITS) == {"1 edit": {"Q1", "Q3", "Q4"}, "2 edits": {"Q2"}}


def test_breakdown_by_hand():
    rows = {
        r.group: r
        for r in breakdown(GT, PREDS, {**edit_groups(EDITS), "distractor only": {"Q4"}, "unknown ids": {"Q9"}})
    }
    # crop = {Q1, Q2}: .9 ✓, .7 ✗, .6 ✓, .5 ✗ → µAP (1 + 2/3) / 2; Q1 first in its query, Q2 second
    assert rows["crop"].uAP == pytest.approx((1 + 2 / 3) / 2, abs=1e-12)
    assert (rows["crop"].n_queries, rows["crop"].n_matched, rows["crop"].recall, rows["crop"].recall_at_rank1) == (
        2,
        2,
        1.0,
        0.5,
    )
    # jpeg = {Q2, Q4}: .8 ✗, .7 ✗, .6 ✗ (tie first), .6 ✓ → 1/4
    assert rows["jpeg"].uAP == pytest.approx(0.25, abs=1e-12)
    assert (rows["jpeg"].n_queries, rows["jpeg"].n_matched, rows["jpeg"].recall_at_rank1) == (2, 1, 0.0)
    # blur = {Q3}: never predicted
    assert (rows["blur"].recall, rows["blur"].recall_at_rank1, rows["blur"].uAP) == (0.0, 0.0, 0.0)
    assert rows["distractor only"].to_dict() == {
        "group": "distractor only",
        "n_queries": 1,
        "n_matched": 0,
        "recall": None,
        "recall_at_rank1": None,
        "uAP": None,
    }
    assert rows["unknown ids"].n_queries == 0


def test_breakdown_of_all_queries_is_the_official_metric():
    (row,) = breakdown(GT, PREDS, {"all": GT.query_ids})
    official = evaluate(GT, PREDS)
    assert row.uAP == pytest.approx(official.uAP, abs=1e-12) and row.uAP == pytest.approx((1 + 2 / 5) / 3)
    assert row.recall_at_rank1 == official.recall_at_rank1
    assert row.recall == pytest.approx(2 / 3)


def _naive_ap(pairs: list[tuple[str, str, float]], truth: dict[str, str], n_pairs: int) -> float:
    """Plain-loop µAP: sort by descending score, non-matches first at equal score, sum precision at hits."""
    labelled = [(s, truth.get(q) == r) for q, r, s in pairs]
    labelled.sort(key=lambda t: (-t[0], t[1]))
    hits, total = 0, 0.0
    for position, (_, hit) in enumerate(labelled, start=1):
        if hit:
            hits += 1
            total += hits / position
    return total / n_pairs


def test_random_breakdown_and_false_positives_against_plain_loops():
    rng = np.random.default_rng(0)
    queries = [f"Q{i:02d}" for i in range(30)]
    truth = {q: f"R{i:02d}" for i, q in enumerate(queries) if i % 3}
    gt = GroundTruth.from_pairs(queries, truth)
    rows = {(q, f"R{int(r):02d}"): float(np.round(rng.random(), 1)) for q in queries for r in rng.integers(0, 30, 4)}
    preds = Predictions.from_rows([(q, r, s) for (q, r), s in rows.items()])
    edits = {
        q: QueryEdits(q, "", tuple(rng.choice(["a", "b", "c"], rng.integers(1, 3), replace=False).tolist()), None)
        for q in queries
    }
    for group in breakdown(gt, preds, edit_groups(edits)):
        members = {q for q, e in edits.items() if group.group in e.edits}
        matched = {q: r for q, r in truth.items() if q in members}
        sub = [(q, r, s) for (q, r), s in rows.items() if q in members]
        assert group.n_matched == len(matched)
        if matched:
            assert group.uAP == pytest.approx(_naive_ap(sub, matched, len(matched)), abs=1e-12)
            found = sum(1 for q, r, _ in sub if truth.get(q) == r)
            assert group.recall == pytest.approx(found / len(matched))
    ranked = sorted(rows.items(), key=lambda t: (-t[1], truth.get(t[0][0]) == t[0][1]))
    expected = [(q, r, s, i) for i, ((q, r), s) in enumerate(ranked, start=1) if truth.get(q) != r][:7]
    assert [(fp.query_id, fp.reference_id, fp.score, fp.rank) for fp in false_positives(gt, preds, 7)] == expected


def test_read_query_edits(tmp_path):
    path = tmp_path / "query_edits.csv"
    path.write_text(
        "query_id,source,edits,overlay_box\nQ00000,R000275,meme|overlay_text,\n"
        "Q00002,distractor:4,overlay_onto_background,96 86 247 194\n"
    )
    assert read_query_edits(path) == {
        "Q00000": QueryEdits("Q00000", "R000275", ("meme", "overlay_text"), None),
        "Q00002": QueryEdits("Q00002", "distractor:4", ("overlay_onto_background",), (96, 86, 247, 194)),
    }


@pytest.mark.parametrize(
    "text, message",
    [
        ("query_id,edits\nQ1,crop\n", r"query_edits.csv:1: expected the header"),
        ("query_id,source,edits,overlay_box\nQ1,R1,crop,\nQ2,R2,crop\n", r"query_edits.csv:3: expected 4 fields"),
        (
            "query_id,source,edits,overlay_box\nQ1,R1,crop,\nQ1,R1,blur,\n",
            r"query_edits.csv:3: query 'Q1' is listed twice",
        ),
        (
            "query_id,source,edits,overlay_box\nQ1,R1,crop,1 2 x 4\n",
            r"query_edits.csv:2: overlay_box must be 4 integers",
        ),
        ("query_id,source,edits,overlay_box\nQ1,R1,,\n", r"query_edits.csv:2: empty query_id or edits"),
    ],
)
def test_read_query_edits_errors_name_the_line(tmp_path, text, message):
    path = tmp_path / "query_edits.csv"
    path.write_text(text)
    with pytest.raises(FormatError, match=message):
        read_query_edits(path)
    with pytest.raises(FormatError, match="file not found"):
        read_query_edits(tmp_path / "missing.csv")
