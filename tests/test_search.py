"""Candidate generation (numpy and torch paths) against brute-force numpy, and against each other."""

from __future__ import annotations

import numpy as np
import pytest

from isc_research import search
from isc_research.search import global_candidates, knn_candidates

TOL = 1e-3  # float32 scores against float64 brute force


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


def test_global_candidates_when_one_query_dominates(monkeypatch) -> None:
    """Small tiles: the cut-off rises over 40 tiles while query 0 takes most of the list; the exact list
    comes out, and the band of kept pairs stays within two lists plus one tile (a cut-off that stopped
    rising would keep all 15,000 pairs)."""
    q, r, qids, rids = make(30, 500, seed=3)
    rng = np.random.default_rng(4)
    r[:300] = q[0] + 0.05 * rng.normal(size=(300, 8)).astype(np.float32)  # 300 refs hug query 0
    held = []
    add = search._Band.add
    monkeypatch.setattr(search._Band, "add", lambda band, *a: (add(band, *a), held.append(band.size)))
    preds = global_candidates(q, r, qids, rids, num_results=250, batch_size=7, reference_block=64)
    check_global(preds, q, r, 250)
    assert (preds.query_ids == "Q0").sum() > 128
    assert len(held) == 5 * 8 and max(held) <= 2 * 250 + 7 * 64


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


def tied_set(seed: int, metric: str) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Vectors with many exact ties: repeated references and queries, on a coarse grid (scores exact in
    float32), plus near-duplicates of some queries among the references."""
    rng = np.random.default_rng(seed)
    q = rng.integers(-3, 4, size=(23, 16)).astype(np.float32) / 4
    r = np.concatenate(
        [np.repeat(rng.integers(-3, 4, size=(70, 16)).astype(np.float32) / 4, 3, axis=0), q[:5] + np.float32(1e-3)]
    )
    q = np.concatenate([q, q[:4]])  # repeated queries tie with their twins
    perm = rng.permutation(len(r))
    return q, r[perm], [f"Q{i}" for i in range(len(q))], [f"R{i}" for i in range(len(r))]


def exact_order(q: np.ndarray, r: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs in the documented order: float32 score descending, then query row, then reference row."""
    qi, ri = np.divmod(np.arange(len(q) * len(r)), len(r))
    s = search._pair_scores(q, r, qi, ri, metric)
    order = np.lexsort((ri, qi, -s))
    return qi[order], ri[order], s[order]


def rows(preds) -> tuple[list[int], list[int]]:
    return [int(x[1:]) for x in preds.query_ids], [int(x[1:]) for x in preds.reference_ids]


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_global_torch_path_equals_numpy_path_ties_included(metric: str) -> None:
    q, r, qids, rids = tied_set(13, metric)
    eq, er, es = exact_order(q, r, metric)
    assert len(np.unique(es)) < len(es) // 10  # the set is made of ties
    for n in (1, 40, 257, 1000):
        cpu = global_candidates(q, r, qids, rids, num_results=n, metric=metric, batch_size=5, reference_block=32)
        tch = global_candidates(
            q,
            r,
            qids,
            rids,
            num_results=n,
            metric=metric,
            batch_size=6,
            reference_block=50,
            device=search._Torch("cpu"),
        )  # the torch path (what a GPU runs) on the CPU
        assert rows(cpu) == rows(tch) == (eq[:n].tolist(), er[:n].tolist())  # the same pairs in the same order
        assert cpu.scores.tolist() == tch.scores.tolist() == es[:n].astype(np.float64).tolist()


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_knn_torch_path_equals_numpy_path_ties_included(metric: str) -> None:
    q, r, qids, rids = tied_set(14, metric)
    eq, er, es = exact_order(q, r, metric)
    for k in (1, 4, 9):
        cpu = knn_candidates(q, r, qids, rids, k=k, metric=metric, batch_size=7)
        tch = knn_candidates(q, r, qids, rids, device=search._Torch("cpu"), k=k, metric=metric, batch_size=7)
        assert rows(cpu) == rows(tch)
        assert cpu.scores.tolist() == tch.scores.tolist()
        qi, ri = rows(cpu)
        for i in range(len(q)):  # each query: its k best in (score, reference row) order
            mine = [b for a, b in zip(qi, ri) if a == i]
            first = [b for a, b in zip(eq.tolist(), er.tolist()) if a == i][:k]
            assert mine == first


def test_knn_band_wider_than_the_preselection() -> None:
    """40 references at exactly the same distance: the k-th GEMM score's band reaches past the 2k + 8
    preselected ones, so the row is scanned whole and the ties go to the lowest reference rows."""
    q = np.zeros((2, 4), np.float32)
    r = np.concatenate([np.eye(4, dtype=np.float32)[[0, 1, 2, 3] * 10], np.full((5, 4), 3, np.float32)])
    ids = [f"R{i}" for i in range(len(r))]
    for device in (None, search._Torch("cpu")):
        preds = knn_candidates(q, r[::-1].copy(), ["Q0", "Q1"], ids, k=3, device=device)
        assert preds.reference_ids.tolist() == ["R5", "R6", "R7"] * 2
        assert preds.scores.tolist() == [-1.0] * 6


def test_search_device_resolution(monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert isinstance(search._backend("cpu"), search._Numpy)
    assert isinstance(search._backend("auto"), search._Numpy)  # auto without a GPU: the numpy path
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    backend = search._backend("auto")
    assert isinstance(backend, search._Torch) and str(backend.device) == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    q, r, qids, rids = make(3, 6, seed=15)
    with pytest.raises(ValueError, match="search device 'cuda': torch sees no CUDA device"):
        global_candidates(q, r, qids, rids, device="cuda")


def test_candidates_dispatches_the_rules_by_name() -> None:
    def same(a, b) -> bool:
        return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("query_ids", "reference_ids", "scores"))

    q, r, qids, rids = make(6, 40, seed=9)
    everyone = search.candidates("global", q, r, qids, rids, results_per_query=3, n_queries=10)
    assert same(everyone, global_candidates(q, r, qids, rids, num_results=30))  # 3 × the 10 queries of the whole set
    assert len(search.candidates("global", q, r, qids, rids, results_per_query=3)) == 18
    assert same(
        search.candidates("knn", q, r, qids, rids, k=4, metric="ip"), knn_candidates(q, r, qids, rids, k=4, metric="ip")
    )
    with pytest.raises(ValueError, match="eval.candidates must be 'global'"):
        search.candidates("top", q, r, qids, rids, setting="eval.candidates")
