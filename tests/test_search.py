"""faiss candidate generation against brute-force numpy."""

from __future__ import annotations

import numpy as np
import pytest

from isc.search import global_candidates, knn_candidates

TOL = 1e-3  # faiss computes squared L2 as |x|² + |y|² − 2xy in float32


def make(n_q: int, n_r: int, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n_q, d)).astype(np.float32)
    r = rng.normal(size=(n_r, d)).astype(np.float32)
    return q, r, [f"Q{i}" for i in range(n_q)], [f"R{i}" for i in range(n_r)]


def brute_scores(q: np.ndarray, r: np.ndarray, metric: str) -> np.ndarray:
    q64, r64 = q.astype(np.float64), r.astype(np.float64)
    if metric == "ip":
        return q64 @ r64.T
    return -((q64[:, None, :] - r64[None, :, :]) ** 2).sum(-1)


def check_global(preds, q, r, n: int, metric: str = "l2") -> None:
    """Same pair set as brute force up to near-ties at the cut-off, and the same scores."""
    s = brute_scores(q, r, metric)
    cutoff = np.sort(s.ravel())[::-1][n - 1]
    qi = np.array([int(x[1:]) for x in preds.query_ids])
    ri = np.array([int(x[1:]) for x in preds.reference_ids])
    assert len(preds) == n
    assert len(set(zip(qi.tolist(), ri.tolist()))) == n
    np.testing.assert_allclose(preds.scores, s[qi, ri], rtol=1e-5, atol=TOL)
    assert (s[qi, ri] >= cutoff - TOL).all()  # nothing below the cut-off was returned
    must = np.argwhere(s > cutoff + TOL)  # everything clearly above it was
    assert {(a, b) for a, b in must.tolist()} <= set(zip(qi.tolist(), ri.tolist()))
    assert (np.diff(preds.scores) <= 0).all()  # sorted by descending score


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_global_candidates_match_brute_force(metric: str) -> None:
    q, r, qids, rids = make(40, 300, seed=1)
    for n in (1, 57, 400, 2000):
        check_global(global_candidates(q, r, qids, rids, num_results=n, metric=metric), q, r, n, metric)


def test_global_candidates_default_is_ten_per_query() -> None:
    q, r, qids, rids = make(25, 200, seed=2)
    preds = global_candidates(q, r, qids, rids)
    check_global(preds, q, r, 250)
    per_query = np.bincount([int(x[1:]) for x in preds.query_ids], minlength=25)
    assert per_query.sum() == 250 and (per_query != 10).any()  # a global list, not k=10 per query


def test_global_candidates_with_tied_distances() -> None:
    q, r, qids, _ = make(10, 30, seed=12)
    r = np.repeat(r, 4, axis=0)  # every distance occurs 4 times
    rids = [f"R{i}" for i in range(len(r))]
    for n in (3, 37, 101):
        check_global(global_candidates(q, r, qids, rids, num_results=n), q, r, n)


def test_global_candidates_research_when_one_query_dominates() -> None:
    q, r, qids, rids = make(30, 500, seed=3)
    rng = np.random.default_rng(4)
    r[:300] = q[0] + 0.05 * rng.normal(size=(300, 8)).astype(np.float32)  # 300 refs hug query 0
    preds = global_candidates(q, r, qids, rids, num_results=250, batch_size=7)
    check_global(preds, q, r, 250)
    # the first pass retrieves only 32 neighbours per query: query 0 needed two re-searches
    assert (preds.query_ids == "Q0").sum() > 128


def test_global_candidates_edge_counts() -> None:
    q, r, qids, rids = make(4, 5, seed=5)
    everything = global_candidates(q, r, qids, rids, num_results=1000)
    check_global(everything, q, r, 20)
    assert len(global_candidates(q, r, qids, rids, num_results=0)) == 0
    assert len(global_candidates(q[:0], r, [], rids)) == 0


def test_global_candidates_batches_do_not_change_results() -> None:
    q, r, qids, rids = make(50, 120, seed=6)
    a = global_candidates(q, r, qids, rids, num_results=300, batch_size=3)
    b = global_candidates(q, r, qids, rids, num_results=300)
    assert set(zip(a.query_ids.tolist(), a.reference_ids.tolist())) == set(
        zip(b.query_ids.tolist(), b.reference_ids.tolist())
    )


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_knn_candidates_match_brute_force(metric: str) -> None:
    q, r, qids, rids = make(20, 60, seed=7)
    preds = knn_candidates(q, r, qids, rids, k=5, metric=metric, batch_size=6)
    s = brute_scores(q, r, metric)
    assert len(preds) == 100
    for i in range(20):
        mine = preds.reference_ids[preds.query_ids == f"Q{i}"]
        assert set(mine.tolist()) == {f"R{j}" for j in np.argsort(-s[i])[:5]}
    qi = np.array([int(x[1:]) for x in preds.query_ids])
    ri = np.array([int(x[1:]) for x in preds.reference_ids])
    np.testing.assert_allclose(preds.scores, s[qi, ri], rtol=1e-5, atol=TOL)


def test_knn_k_clipped_to_reference_count() -> None:
    q, r, qids, rids = make(3, 4, seed=8)
    preds = knn_candidates(q, r, qids, rids, k=10)
    assert len(preds) == 12 and len(set(zip(preds.query_ids.tolist(), preds.reference_ids.tolist()))) == 12


def test_ip_scores_are_similarities() -> None:
    q = np.array([[1.0, 0.0]], np.float32)
    r = np.array([[0.5, 0.0], [2.0, 0.0], [-1.0, 0.0]], np.float32)
    preds = global_candidates(q, r, ["Q0"], ["Ra", "Rb", "Rc"], num_results=2, metric="ip")
    assert preds.reference_ids.tolist() == ["Rb", "Ra"] and preds.scores.tolist() == [2.0, 0.5]
    l2 = global_candidates(q, r, ["Q0"], ["Ra", "Rb", "Rc"], num_results=2)
    assert l2.reference_ids.tolist() == ["Ra", "Rb"] and l2.scores.tolist() == [-0.25, -1.0]


def test_accepts_byte_ids_and_float64() -> None:
    q, r, qids, rids = make(3, 6, seed=9)
    preds = knn_candidates(q.astype(np.float64), r, np.array(qids, "S"), np.array(rids, "S"), k=2)
    assert preds.query_ids.dtype.kind == "U" and preds.query_ids[0] == "Q0"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: {**a, "query_vectors": a["query_vectors"][:, :4]}, "dimensions differ"),
        (lambda a: {**a, "query_vectors": a["query_vectors"][0]}, "must be a 2-D array"),
        (lambda a: {**a, "reference_vectors": a["reference_vectors"][:0]}, "reference_vectors is empty"),
        (lambda a: {**a, "query_ids": a["query_ids"][:2]}, "one id per vector"),
        (lambda a: {**a, "reference_ids": ["R0"] * 6}, "reference_ids contains duplicates, e.g. 'R0'"),
        (lambda a: {**a, "metric": "cosine"}, "metric must be one of"),
        (lambda a: {**a, "batch_size": 0}, "batch_size"),
    ],
)
def test_input_validation(change, message: str) -> None:
    q, r, qids, rids = make(3, 6, seed=10)
    args = {"query_vectors": q, "reference_vectors": r, "query_ids": qids, "reference_ids": rids}
    for fn in (global_candidates, knn_candidates):
        with pytest.raises(ValueError, match=message):
            fn(**change(args))


def test_non_finite_and_bad_counts_rejected() -> None:
    q, r, qids, rids = make(3, 6, seed=11)
    r[4, 2] = np.nan
    with pytest.raises(ValueError, match="reference_vectors holds a non-finite value .* row 4"):
        global_candidates(q, r, qids, rids)
    r[4, 2] = 0
    with pytest.raises(ValueError, match="num_results"):
        global_candidates(q, r, qids, rids, num_results=-1)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        knn_candidates(q, r, qids, rids, k=0)
