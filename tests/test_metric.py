"""Exact ISC µAP (RECIPES §1.3): hand-computed cases, a naive reference, and sklearn."""

from __future__ import annotations

import numpy as np
import pytest

import isc_research.metric as metric_module
from isc_research.metric import GroundTruth, Metrics, Predictions, check_duplicates, evaluate, precision_recall
from tests.call_count import python_calls


def gt_of(matches: dict[str, str], distractors: tuple[str, ...] = ()) -> GroundTruth:
    return GroundTruth.from_pairs(list(matches) + list(distractors), matches)


def preds_of(*rows: tuple[str, str, float]) -> Predictions:
    return Predictions.from_rows(rows)


# --------------------------------------------------------------------------- hand-computed cases


def test_perfect_ranking() -> None:
    gt = gt_of({"Q1": "R1", "Q2": "R2"}, ("Q3",))
    preds = preds_of(("Q1", "R1", 0.9), ("Q2", "R2", 0.8), ("Q3", "R7", 0.1), ("Q1", "R9", 0.05))
    m = evaluate(gt, preds)
    # sorted: TP, TP, FP, FP -> precision at the two hits = 1, 1 -> µAP = (1 + 1) / 2
    assert m.uAP == 1.0
    # P >= 0.9 up to k=2 where R = 1.0; the threshold is the score at k=2
    assert m.recall_at_p90 == 1.0 and m.threshold_at_p90 == 0.8
    assert m.recall_at_rank1 == 1.0 and m.recall_at_rank10 == 1.0
    assert m.n_predictions == 4 and m.n_gt_pairs == 2


@pytest.mark.parametrize("flip", [False, True])
def test_tie_between_match_and_non_match_is_pessimistic(flip: bool) -> None:
    gt = gt_of({"Q1": "R1", "Q2": "R2"})
    rows = [("Q1", "R1", 0.5), ("Q2", "R9", 0.5), ("Q2", "R2", 0.2)]
    preds = preds_of(*(rows[::-1] if flip else rows))
    m = evaluate(gt, preds)
    # the tie at 0.5 puts the FP first: FP, TP(k=2, P=1/2), TP(k=3, P=2/3)
    # µAP = (1/2 + 2/3) / 2 = 7/12 (an optimistic order would give (1 + 2/3) / 2 = 5/6)
    assert m.uAP == pytest.approx(7 / 12, abs=1e-15)
    assert m.recall_at_p90 is None and m.threshold_at_p90 is None  # P = 0, 1/2, 2/3
    precision, recall, scores = precision_recall(gt, preds)
    np.testing.assert_allclose(precision, [0, 1 / 2, 2 / 3])
    np.testing.assert_allclose(recall, [0, 0.5, 1.0])
    np.testing.assert_allclose(scores, [0.5, 0.5, 0.2])
    # rank of (Q2, R2): Q2 has 2 predictions with score >= 0.2 -> rank 1: not found at rank 1
    assert m.recall_at_rank1 == 0.5 and m.recall_at_rank10 == 1.0


def test_constant_score_cannot_game_uap() -> None:
    gt = gt_of({"Q1": "R1"}, ("Q2", "Q3"))
    preds = preds_of(("Q1", "R1", 1.0), ("Q2", "R2", 1.0), ("Q3", "R3", 1.0))
    # all tied: both FPs rank first, the hit is at k=3 -> µAP = 1/3
    assert evaluate(gt, preds).uAP == pytest.approx(1 / 3)


def test_distractor_query_predictions_are_false_positives() -> None:
    gt = gt_of({"Q1": "R1"}, ("Q2",))
    preds = preds_of(("Q2", "R5", 0.9), ("Q1", "R1", 0.8))
    m = evaluate(gt, preds)
    # FP (distractor), TP at k=2 with P = 1/2; one GT pair -> µAP = 1/2
    assert m.uAP == 0.5
    assert m.recall_at_p90 is None
    assert m.recall_at_rank1 == 1.0  # the distractor's prediction is another query's: rank 0


def test_unpredicted_gt_pair_caps_recall() -> None:
    gt = gt_of({"Q1": "R1", "Q2": "R2", "Q3": "R3", "Q4": "R4"})
    preds = preds_of(("Q1", "R1", 0.9), ("Q2", "R2", 0.8))
    m = evaluate(gt, preds)
    # two hits with P = 1, recall denominator 4 (all GT pairs) -> µAP = (1 + 1) / 4
    assert m.uAP == 0.5
    assert m.recall_at_p90 == 0.5 and m.threshold_at_p90 == 0.8
    assert m.recall_at_rank1 == 0.5 and m.recall_at_rank10 == 0.5  # Q3, Q4 never predicted


def test_second_prediction_for_matched_query_is_false_positive() -> None:
    gt = gt_of({"Q1": "R1", "Q2": "R2"})
    preds = preds_of(("Q1", "R1", 0.9), ("Q1", "R5", 0.8), ("Q2", "R2", 0.7))
    m = evaluate(gt, preds)
    # TP(k=1, P=1), FP, TP(k=3, P=2/3) -> µAP = (1 + 2/3) / 2 = 5/6
    assert m.uAP == pytest.approx(5 / 6)
    # P = 1, 1/2, 2/3: only k=1 reaches 0.9, where R = 1/2
    assert m.recall_at_p90 == 0.5 and m.threshold_at_p90 == 0.9
    assert m.recall_at_rank1 == 1.0  # each GT reference is its query's top prediction


def test_p90_reached_at_intermediate_rank() -> None:
    gt = gt_of({f"Q{i}": f"R{i}" for i in range(10)})
    rows = [(f"Q{i}", f"R{i}", 1.0 - 0.01 * i) for i in range(8)]  # k=1..8: TP, P=1
    rows += [("Q8", "X", 0.90), ("Q8", "R8", 0.89)]  # k=9 FP; k=10 TP: P = 9/10 exactly, R = 0.9
    rows += [("Q9", "X", 0.80), ("Q9", "Y", 0.79), ("Q9", "R9", 0.78)]  # k=13 TP: P = 10/13
    m = evaluate(gt, preds_of(*rows))
    assert m.uAP == pytest.approx((8 + 9 / 10 + 10 / 13) / 10)
    # P >= 0.9 holds for k <= 10; the largest recall there is 0.9, first reached at k=10
    assert m.recall_at_p90 == pytest.approx(0.9) and m.threshold_at_p90 == 0.89
    # Q8's match is its 2nd prediction (rank 1), Q9's its 3rd (rank 2)
    assert m.recall_at_rank1 == pytest.approx(0.8) and m.recall_at_rank10 == 1.0


def test_p90_never_reached_is_none() -> None:
    gt = gt_of({"Q1": "R1"}, ("Q2",))
    m = evaluate(gt, preds_of(("Q2", "R2", 0.9), ("Q1", "R1", 0.1)))
    assert m.recall_at_p90 is None and m.threshold_at_p90 is None
    assert m.to_dict()["recall_at_p90"] is None


def test_recall_at_rank_with_ties_and_unpredicted_pairs() -> None:
    gt = gt_of({"Q1": "R1", "Q2": "R2", "Q3": "R3", "Q4": "R4"})
    rows = [("Q1", "R1", 0.5)] + [("Q1", f"A{i}", 0.6 + i) for i in range(9)]  # rank 9: in top 10
    rows += [("Q2", "R2", 0.5)] + [("Q2", f"A{i}", 0.6 + i) for i in range(10)]  # rank 10: missed
    # Q3 never predicted; Q4's match ties with 9 others at 0.3: rank = 10 - 1 = 9 (pessimistic)
    rows += [("Q4", "R4", 0.3)] + [("Q4", f"A{i}", 0.3) for i in range(9)]
    m = evaluate(gt, preds_of(*rows))
    assert m.recall_at_rank1 == 0.0
    assert m.recall_at_rank10 == 0.5  # Q1 and Q4 of 4 pairs


def test_rank_tie_with_own_query() -> None:
    gt = gt_of({"Q1": "R1"})
    m = evaluate(gt, preds_of(("Q1", "R2", 0.5), ("Q1", "R1", 0.5)))
    assert m.recall_at_rank1 == 0.0 and m.recall_at_rank10 == 1.0  # 2 scores >= 0.5 -> rank 1
    assert m.uAP == 0.5  # FP then TP at k=2


def test_empty_predictions() -> None:
    m = evaluate(gt_of({"Q1": "R1"}), Predictions.from_rows([]))
    assert m == Metrics(0.0, None, None, 0.0, 0.0, 0, 1)


def test_no_gt_pairs_rejected() -> None:
    with pytest.raises(ValueError, match="no matched pairs"):
        evaluate(GroundTruth.from_pairs(["Q1"], {}), preds_of(("Q1", "R1", 1.0)))


def test_duplicates_rejected() -> None:
    preds = preds_of(("Q1", "R1", 0.9), ("Q2", "R1", 0.8), ("Q1", "R1", 0.1), ("Q1", "R1", 0.3))
    with pytest.raises(ValueError, match=r"1 \(query, reference\) pair.*\('Q1', 'R1'\) occurs 3 times"):
        check_duplicates(preds)
    with pytest.raises(ValueError, match="duplicates"):
        evaluate(gt_of({"Q1": "R1", "Q2": "R2"}), preds)
    check_duplicates(preds_of(("Q1", "R1", 0.9), ("Q1", "R2", 0.9), ("Q2", "R1", 0.9)))


def test_duplicates_found_despite_hash_collisions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metric_module, "_string_hash", lambda ids: np.zeros(len(ids), np.uint64))
    check_duplicates(preds_of(("Q1", "R1", 1), ("Q1", "R2", 1), ("Q2", "R1", 1)))
    with pytest.raises(ValueError, match=r"\('Q1', 'R1'\) occurs 2 times"):
        check_duplicates(preds_of(("Q1", "R1", 1), ("Q1", "R2", 1), ("Q2", "R1", 1), ("Q1", "R1", 2)))


def test_unknown_query_rejected() -> None:
    gt = gt_of({"Q1": "R1"}, ("Q2",))
    preds = preds_of(("Q9", "R1", 0.5), ("Q8", "R1", 0.4), ("Q9", "R2", 0.4), ("Q1", "R1", 0.3))
    with pytest.raises(ValueError, match=r"2 query id\(s\) that are not in the ground truth, e\.g\. 'Q8' \(3 pre"):
        evaluate(gt, preds)


# --------------------------------------------------------------------------- data classes


def test_ground_truth_validation() -> None:
    gt = GroundTruth.from_pairs(["Q1", "Q2", "Q3"], [("Q1", "R1"), ("Q3", "R3")])
    assert gt.n_pairs == 2 and gt.query_ids == ("Q1", "Q2", "Q3") and gt.matches == {"Q1": "R1", "Q3": "R3"}
    with pytest.raises(ValueError, match="'Q4' is not among"):
        GroundTruth.from_pairs(["Q1"], {"Q4": "R4"})
    with pytest.raises(ValueError, match="'Q1' more than once"):
        GroundTruth.from_pairs(["Q1", "Q2", "Q1"], {})
    with pytest.raises(ValueError, match="more than one ground-truth reference"):
        GroundTruth.from_pairs(["Q1"], [("Q1", "R1"), ("Q1", "R2")])
    with pytest.raises(ValueError, match="non-empty"):
        GroundTruth.from_pairs(["Q1"], {"Q1": ""})


def test_predictions_construction() -> None:
    p = Predictions.from_rows([("Q1", "R1", 1), ("Q2", "R2", 0.5)])
    assert len(p) == 2 and p.scores.dtype == np.float64 and p.query_ids.tolist() == ["Q1", "Q2"]
    both = Predictions.concatenate([p, Predictions.from_rows([("Q3", "R3", 0.1)]), Predictions.from_rows([])])
    assert len(both) == 3 and both.reference_ids.tolist() == ["R1", "R2", "R3"]
    obj = Predictions(np.array(["Q1"], dtype=object), np.array([b"R1"], dtype=object), [0.5])
    assert obj.query_ids.dtype.kind == "U" and obj.reference_ids.tolist() == ["R1"]
    with pytest.raises(ValueError, match="equal length"):
        Predictions(np.array(["Q1"]), np.array(["R1", "R2"]), np.array([1.0]))
    with pytest.raises(ValueError, match="not finite"):
        Predictions.from_rows([("Q1", "R1", float("nan"))])
    with pytest.raises(ValueError, match="strings"):
        Predictions(np.array([1]), np.array(["R1"]), np.array([1.0]))


def test_metrics_to_dict_keys() -> None:
    m = evaluate(gt_of({"Q1": "R1"}), preds_of(("Q1", "R1", 0.5)))
    assert list(m.to_dict()) == [
        "uAP", "recall_at_p90", "threshold_at_p90", "recall_at_rank1", "recall_at_rank10",
        "n_predictions", "n_gt_pairs",
    ]  # fmt: skip


# --------------------------------------------------------------------------- randomized references


def naive_metrics(matches: dict[str, str], rows: list[tuple[str, str, float]]) -> tuple:
    """Straight transcription of RECIPES §1.3 with Python sorting and explicit loops."""
    gt_pairs = set(matches.items())
    n_pos = len(gt_pairs)
    ranked = sorted(rows, key=lambda t: (t[2], (t[0], t[1]) not in gt_pairs), reverse=True)
    tp, ap, prev_recall = 0, 0.0, 0.0
    best_recall, best_threshold = None, None
    for k, (q, r, s) in enumerate(ranked, start=1):
        tp += (q, r) in gt_pairs
        precision, recall = tp / k, tp / n_pos
        ap += (recall - prev_recall) * precision
        prev_recall = recall
        if precision >= 0.9 and (best_recall is None or recall > best_recall):
            best_recall, best_threshold = recall, s
    found1 = found10 = 0
    for q, r in gt_pairs:
        own = [(rr, s) for qq, rr, s in rows if qq == q]
        score = next((s for rr, s in own if rr == r), None)
        if score is None:
            continue
        rank = sum(1 for _, s in own if s >= score) - 1
        found1 += rank < 1
        found10 += rank < 10
    return ap, best_recall, best_threshold, found1 / n_pos, found10 / n_pos


def random_case(rng: np.random.Generator, tie_free: bool = False) -> tuple[dict, list[str], list]:
    n_queries = int(rng.integers(1, 15))
    queries = [f"Q{i}" for i in range(n_queries)]
    matched = rng.random(n_queries) < 0.6
    matched[rng.integers(n_queries)] = True
    matches = {q: f"R{rng.integers(6)}" for q, m in zip(queries, matched) if m}
    refs = [f"R{i}" for i in range(8)]
    pairs = [(q, r) for q in queries for r in refs]
    n = int(rng.integers(0, min(40, len(pairs)) + 1))
    chosen = rng.choice(len(pairs), size=n, replace=False)
    if tie_free:
        scores = rng.permutation(n) / max(n, 1) + 0.001
    else:
        scores = rng.integers(0, 5, size=n) / 4  # few distinct values: many ties
    rows = [(*pairs[c], float(s)) for c, s in zip(chosen, scores)]
    return matches, queries, rows


def test_matches_naive_reference_on_random_cases() -> None:
    rng = np.random.default_rng(2021)
    for _ in range(400):
        matches, queries, rows = random_case(rng)
        m = evaluate(GroundTruth.from_pairs(queries, matches), Predictions.from_rows(rows))
        ap, r90, t90, r1, r10 = naive_metrics(matches, rows)
        assert m.uAP == pytest.approx(ap, abs=1e-12)
        assert m.recall_at_p90 == (None if r90 is None else pytest.approx(r90))
        assert m.threshold_at_p90 == t90
        assert (m.recall_at_rank1, m.recall_at_rank10) == (pytest.approx(r1), pytest.approx(r10))
        assert m.n_predictions == len(rows) and m.n_gt_pairs == len(matches)


def test_matches_sklearn_average_precision_without_ties() -> None:
    from sklearn import metrics as sklearn_metrics  # scikit-learn: a core dependency (isc_research.verifier.metrics)

    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(200):
        matches, queries, rows = random_case(rng, tie_free=True)
        y = np.array([matches.get(q) == r for q, r, _ in rows])
        if not y.any():
            continue
        scores = np.array([s for *_, s in rows])
        expected = sklearn_metrics.average_precision_score(y, scores) * y.sum() / len(matches)
        m = evaluate(GroundTruth.from_pairs(queries, matches), Predictions.from_rows(rows))
        assert m.uAP == pytest.approx(expected, abs=1e-12)
        checked += 1
    assert checked > 100


def test_restricted_ground_truth_keeps_the_file_order_of_the_given_queries() -> None:
    gt = gt_of({"Q1": "R1", "Q2": "R2", "Q4": "R4"}, ("Q3", "Q5"))
    assert gt.restricted(["Q5", "Q1", "Q2", "Q3", "Q4", "Q9"]) is gt
    part = gt.restricted(["Q4", "Q3", "Q1"])
    assert part.query_ids == ("Q1", "Q4", "Q3") and part.matches == {"Q1": "R1", "Q4": "R4"} and part.n_pairs == 2
    assert gt.restricted([]).query_ids == ()


def test_evaluate_does_no_python_work_per_prediction() -> None:
    """evaluate is vectorised: 20× the predictions make exactly as many Python calls (a per-row loop would
    make 38,000 more). Its time at 500k rows is measured by scripts/bench/predictions_io.py."""
    rng = np.random.default_rng(0)
    n_queries = 2_000
    queries = np.char.add("Q", np.char.zfill(np.arange(n_queries).astype(str), 5))
    gt = GroundTruth.from_pairs(queries.tolist(), {q: "R" + q[1:] for q in queries[:400].tolist()})
    calls = {}
    for n in (2_000, 40_000):
        q = queries[rng.integers(n_queries, size=n)]
        r = np.char.add("R", np.char.zfill(rng.permutation(1_000_000)[:n].astype(str), 6))
        q[:300] = queries[:300]  # some true pairs
        r[:300] = np.char.add("R", np.char.lstrip(queries[:300], "Q"))
        preds = Predictions(q, r, np.round(rng.normal(size=n), 2))
        m = evaluate(gt, preds)
        assert 0 < m.uAP < 1 and m.n_predictions == n
        calls[n] = python_calls(lambda: evaluate(gt, preds))
    assert calls[40_000] == calls[2_000]
