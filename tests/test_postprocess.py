"""Every post-process against a naive float64 implementation of its RECIPES formula."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from omegaconf import OmegaConf

from isc_research.postprocess import (
    PCA,
    Chain,
    L2Normalize,
    NegativeEmbeddingSubtraction,
    PushAway,
    ScoreNormalization,
    Stretching,
    build_chain,
    build_chains,
    select_models,
)
from isc_research.postprocess.neighbours import top_k
from tests.conftest import compose_config


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    scale = np.linspace(2.0, 0.3, 8)
    train = unit(rng.normal(size=(60, 8)) * scale).astype(np.float32)
    queries = unit(rng.normal(size=(7, 8)) * scale).astype(np.float32)
    refs = unit(rng.normal(size=(9, 8)) * scale).astype(np.float32)
    return train, queries, refs


def naive_neighbours(bank, x, k, exclude_self=False):
    """Indices and similarities of the k largest x·bank, by plain loops in float64."""
    out_s, out_i = [], []
    for i, row in enumerate(x.astype(np.float64)):
        sims = [(float(row @ b), j) for j, b in enumerate(bank.astype(np.float64)) if not (exclude_self and j == i)]
        sims.sort(key=lambda t: -t[0])
        out_s.append([s for s, _ in sims[:k]])
        out_i.append([j for _, j in sims[:k]])
    return np.array(out_s), np.array(out_i)


def test_top_k_matches_loops_and_excludes_self(data):
    train, queries, _ = data
    s, i = top_k(train, queries, 5)
    ns, ni = naive_neighbours(train, queries, 5)
    np.testing.assert_array_equal(i, ni)
    np.testing.assert_allclose(s, ns, atol=1e-6)
    s, i = top_k(train, train, 4, exclude_self=True)
    ns, ni = naive_neighbours(train, train, 4, exclude_self=True)
    np.testing.assert_array_equal(i, ni)
    assert not (i == np.arange(len(train))[:, None]).any()
    with pytest.raises(ValueError, match="only 59"):
        top_k(train, train, 60, exclude_self=True)


@pytest.mark.parametrize(("whiten", "dim"), [(False, 8), (True, 8), (True, 5), (False, 3)])
def test_pca_matches_the_eigendecomposition(data, whiten, dim):
    train, queries, _ = data
    pca = PCA(dim=dim, whiten=whiten).fit(train)
    x64 = train.astype(np.float64)
    mean = x64.mean(0)
    cov = (x64 - mean).T @ (x64 - mean) / len(x64)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][:dim]
    power = -0.5 if whiten else 0.0
    expected = (queries - mean) @ vectors[:, order] * values[order] ** power
    got = pca.transform(queries, "query")
    signs = np.sign((got * expected).sum(0))  # eigenvectors are defined up to sign
    np.testing.assert_allclose(got * signs, expected, rtol=1e-4, atol=1e-5)
    if whiten:  # whitened training descriptors have identity covariance
        t = pca.transform(train, "training").astype(np.float64)
        np.testing.assert_allclose(np.cov(t.T, bias=True), np.eye(dim), atol=1e-4)


def test_pca_whitening_equals_faiss_pcamatrix_up_to_sqrt_n(data):
    """faiss' PCAMatrix (used by the ISC baseline and S-square) takes eigenvalues of the scatter matrix,
    i.e. n × ours: its whitened output is ours / √n."""
    train, queries, _ = data
    ours = PCA(dim=6, whiten=True).fit(train).transform(queries, "query")
    matrix = faiss.PCAMatrix(8, 6, -0.5, False)
    matrix.train(train)
    theirs = matrix.apply(queries) * np.sqrt(len(train))
    signs = np.sign((ours * theirs).sum(0))
    np.testing.assert_allclose(ours * signs, theirs, rtol=1e-3, atol=1e-4)


def test_pca_fits_on_the_seeded_subset_d2lv_drew(data):
    """max_training: the PCA is fitted on RandomState(seed).choice(n, size, replace=False) of the training rows
    (D²LV's draw, RECIPES §5.3), equal to a PCA fitted on those rows alone; a chain's later steps still see
    every training row; the same seed gives the same subset, another seed another one."""
    train, queries, _ = data
    rows = np.random.RandomState(123).choice(len(train), size=30, replace=False)
    sub = PCA(dim=5, whiten=True, max_training=30).fit(train).transform(queries, "query")
    alone = PCA(dim=5, whiten=True).fit(train[rows]).transform(queries, "query")
    np.testing.assert_allclose(sub, alone, rtol=1e-5, atol=1e-6)
    assert not np.allclose(sub, PCA(dim=5, whiten=True).fit(train).transform(queries, "query"))
    other = PCA(dim=5, whiten=True, max_training=30, seed=7).fit(train).transform(queries, "query")
    assert not np.allclose(np.abs(other), np.abs(sub))
    chain = Chain(
        "c", [PCA(dim=5, whiten=True, max_training=30), L2Normalize(), ScoreNormalization(2.0, 3, "mean")], "ip"
    )
    chain.fit(train)
    assert len(chain.steps[2]._training) == len(train)
    assert "fit on 30" in chain.describe()
    with pytest.raises(ValueError, match="max_training must be >= 2"):
        PCA(max_training=1)


def test_pca_errors(data):
    train, queries, _ = data
    with pytest.raises(ValueError, match="cannot keep 9 dims of 8-d"):
        PCA(dim=9).fit(train)
    with pytest.raises(ValueError, match="span only 4 dims"):
        PCA(whiten=True).fit(train[:5])
    with pytest.raises(RuntimeError, match="call fit"):
        PCA().transform(queries, "query")
    with pytest.raises(ValueError, match="4 dims, fitted on 8"):
        PCA().fit(train).transform(queries[:, :4], "query")


def test_l2_normalize(data):
    _, queries, _ = data
    out = L2Normalize().fit(None).transform(queries * 3.0, "reference")
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)


def naive_dba(train, k, power):
    t = train.astype(np.float64)
    out = np.zeros_like(t)
    for i in range(len(t)):
        sims = sorted(((float(t[i] @ t[j]), j) for j in range(len(t))), key=lambda p: -p[0])[:k]
        for s, j in sims:
            out[i] += s**power * t[j]
        out[i] /= np.linalg.norm(out[i])
    return out


def naive_negative_embedding(bank, x, k, beta, iterations, exclude_self=False):
    x = x.astype(np.float64).copy()
    for _ in range(iterations):
        new = np.empty_like(x)
        for i in range(len(x)):
            sims = sorted(
                ((float(x[i] @ b), j) for j, b in enumerate(bank) if not (exclude_self and j == i)), key=lambda p: -p[0]
            )[:k]
            v = x[i] - beta * np.mean([bank[j] for _, j in sims], axis=0)
            new[i] = v / np.linalg.norm(v)
        x = new
    return x


@pytest.mark.parametrize(("dba_k", "iterations"), [(10, 1), (0, 1), (4, 3)])
def test_dba_and_negative_embedding_subtraction(data, dba_k, iterations):
    train, queries, refs = data
    step = NegativeEmbeddingSubtraction(k=10, beta=0.35, iterations=iterations, dba_k=dba_k, dba_power=3).fit(train)
    bank = naive_dba(train, dba_k, 3) if dba_k else train.astype(np.float64)
    np.testing.assert_allclose(step.bank, bank, atol=1e-5)
    for role, x in (("query", queries), ("reference", refs)):  # both sides, alike (RECIPES §2.4)
        np.testing.assert_allclose(
            step.transform(x, role), naive_negative_embedding(bank, x, 10, 0.35, iterations), atol=1e-5
        )
    np.testing.assert_allclose(
        step.transform(train, "training"),
        naive_negative_embedding(bank, train, 10, 0.35, iterations, exclude_self=True),
        atol=1e-5,
    )


def test_push_away_moves_queries_only(data):
    train, queries, refs = data
    step = PushAway(k=20, strength=1.8, c_neighbours=3).fit(train)
    got = step.transform(queries, "query")
    t = train.astype(np.float64)
    for i, q in enumerate(queries.astype(np.float64)):
        cos = [(float(q @ tj / np.linalg.norm(q) / np.linalg.norm(tj)), j) for j, tj in enumerate(t)]
        cos.sort(key=lambda p: -p[0])
        units = [(q - t[j]) / np.linalg.norm(q - t[j]) for _, j in cos[:20]]
        d = np.mean(units, axis=0)
        d /= np.linalg.norm(d)
        c = np.mean([s for s, _ in cos[:3]])
        np.testing.assert_allclose(got[i], q + 1.8 * np.sqrt(max(c, 0)) * d, atol=1e-5)
    assert not np.allclose(np.linalg.norm(got, axis=1), 1.0)  # not re-normalised (RECIPES §3.3)
    np.testing.assert_array_equal(step.transform(refs, "reference"), refs)


def test_push_away_neighbour_axis_form_is_the_notebooks(data):
    """S-square's notebooks normalise q − t_j along the neighbour axis (per coordinate over the K neighbours),
    not per vector: each coordinate of the stacked differences divided by its norm over the K rows."""
    train, queries, _ = data
    notebook = (
        PushAway(k=20, strength=1.8, c_neighbours=3, normalize="neighbours").fit(train).transform(queries, "query")
    )
    written = PushAway(k=20, strength=1.8, c_neighbours=3, normalize="vectors").fit(train).transform(queries, "query")
    t = train.astype(np.float64)
    for i, q in enumerate(queries.astype(np.float64)):
        cos = sorted(
            ((float(q @ tj / np.linalg.norm(q) / np.linalg.norm(tj)), j) for j, tj in enumerate(t)), key=lambda p: -p[0]
        )
        diffs = np.stack([q - t[j] for _, j in cos[:20]])  # (K, d)
        d = (diffs / np.linalg.norm(diffs, axis=0, keepdims=True)).mean(axis=0)
        d /= np.linalg.norm(d)
        c = np.mean([s for s, _ in cos[:3]])
        np.testing.assert_allclose(notebook[i], q + 1.8 * np.sqrt(max(c, 0)) * d, atol=1e-5)
    assert not np.allclose(notebook, written, atol=1e-3)  # the two forms are different directions
    with pytest.raises(ValueError, match="normalize"):
        PushAway(normalize="rows")


def test_stretching_scales_queries_by_their_top5_similarity(data):
    train, queries, refs = data
    step = Stretching(factor=2.5, k=5).fit(train)
    got = step.transform(queries, "query")
    for i, q in enumerate(queries.astype(np.float64)):
        top5 = sorted((float(q @ t) for t in train.astype(np.float64)), reverse=True)[:5]
        np.testing.assert_allclose(got[i], 2.5 * np.mean(top5) * q, atol=1e-6)
    np.testing.assert_array_equal(step.transform(refs, "reference"), refs)


@pytest.mark.parametrize(("reduction", "n", "factor"), [("min", 10, 2.0), ("mean", 3, 1.0)])
def test_score_normalisation_inner_products_are_normalised_scores(data, reduction, n, factor):
    train, queries, refs = data
    step = ScoreNormalization(factor=factor, n=n, reduction=reduction, metric="ip").fit(train)
    q, r = step.transform(queries, "query"), step.transform(refs, "reference")
    assert q.shape[1] == r.shape[1] == 9
    for i, qi in enumerate(queries.astype(np.float64)):
        sims = sorted((float(qi @ t) for t in train.astype(np.float64)), reverse=True)[:n]
        s = sims[-1] if reduction == "min" else np.mean(sims)
        for j, rj in enumerate(refs.astype(np.float64)):
            assert q[i] @ r[j] == pytest.approx(qi @ rj - factor * s, abs=1e-5)


def test_score_normalisation_l2_form_is_a_shared_decreasing_map(data):
    """The descriptor-track form: squared L2 distance = C + 2 − 2·(normalised score), C = 1 + factor²."""
    train, queries, refs = data
    ip = ScoreNormalization(2.0, 10, "min", "ip").fit(train)
    l2 = ScoreNormalization(2.0, 10, "min", "l2").fit(train)
    scores = ip.transform(queries, "query").astype(np.float64) @ ip.transform(refs, "reference").T
    q, r = l2.transform(queries, "query").astype(np.float64), l2.transform(refs, "reference").astype(np.float64)
    assert q.shape[1] == 10
    dist = ((q[:, None, :] - r[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(dist, 1 + 4 + 2 - 2 * scores, atol=1e-4)
    with pytest.raises(ValueError, match="unit-norm"):
        l2.transform(queries * 2, "query")


def test_score_norm_rejects_bad_options():
    with pytest.raises(ValueError, match="'avg' is 'mean'"):
        ScoreNormalization(reduction="avg")
    with pytest.raises(ValueError, match="metric must be"):
        ScoreNormalization(metric="cosine")


def test_chain_fits_each_step_on_the_transformed_training_set(data):
    train, queries, _ = data
    chain = Chain("c", [PCA(dim=6, whiten=True), L2Normalize(), Stretching(2.5, 5)]).fit(train)
    pca = PCA(dim=6, whiten=True).fit(train)
    t = L2Normalize().transform(pca.transform(train, "training"), "training")
    expected = (
        Stretching(2.5, 5).fit(t).transform(L2Normalize().transform(pca.transform(queries, "query"), "query"), "query")
    )
    np.testing.assert_allclose(chain.transform(queries, "query"), expected, atol=1e-6)
    assert chain.describe() == "pcaw(6) → l2 → stretch(2.5·top5)"


def test_chain_rules():
    with pytest.raises(ValueError, match="must be the last step"):
        Chain("bad", [ScoreNormalization(), L2Normalize()], metric="ip")
    with pytest.raises(ValueError, match="needs metric='ip'"):
        Chain("bad", [ScoreNormalization(metric="ip")], metric="l2")
    with pytest.raises(ValueError, match="needs training-set descriptors"):
        Chain("c", [PCA()]).fit(None)
    raw = Chain("raw").fit(None)
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(raw.transform(x, "query"), x)
    with pytest.raises(ValueError, match="role must be one of"):
        L2Normalize().transform(x, "queries")


def test_every_preset_builds_and_the_metric_follows_score_norm():
    cfg = compose_config("eval", ["eval_grid=ablation"])
    chains = {c.name: c for c in build_chains(cfg.eval_grid.chains)}
    assert list(chains) == [
        "raw",
        "pca",
        "pcaw",
        "neg_emb",
        "neg_emb_no_dba",
        "stretch",
        "push_away",
        "push_away_notebook",
        "score_norm",
        "score_norm_l2",
        "sscd",
    ]
    assert chains["push_away"].steps[-1].normalize == "vectors"  # the write-up's form; the notebooks' next to it
    assert chains["push_away_notebook"].steps[-1].normalize == "neighbours"
    assert chains["score_norm"].metric == chains["sscd"].metric == "ip"
    assert chains["score_norm_l2"].metric == chains["push_away"].metric == "l2"
    assert chains["neg_emb_no_dba"].steps[0].dba_k == 0 and chains["neg_emb"].steps[0].dba_k == 10
    ens = compose_config("eval", ["eval_grid=ensemble"])
    built = build_chains(ens.eval_grid.chains)
    assert [c.models for c in built] == [[0], [1], None, None]
    assert built[3].steps[0].dim == 256


def test_build_chain_errors_name_the_chain():
    with pytest.raises(ValueError, match="chain 'x': step 1"):
        build_chain("x", OmegaConf.create({"steps": {"a": {"_target_": "isc_research.postprocess.PCA", "nope": 1}}}))
    with pytest.raises(ValueError, match="not an isc_research.postprocess step"):
        build_chain("x", OmegaConf.create({"steps": {"a": {"_target_": "builtins.dict"}}}))
    with pytest.raises(ValueError, match="eval_grid.chains is empty"):
        build_chains({})
    off = build_chain(
        "x", OmegaConf.create({"steps": {"a": None, "l2": {"_target_": "isc_research.postprocess.L2Normalize"}}})
    )
    assert off.describe() == "l2"


def test_select_models_concatenates_in_order():
    a, b = np.zeros((2, 2), np.float32), np.ones((2, 3), np.float32)
    assert select_models(Chain("c", models=None), [a, b]).shape == (2, 5)
    np.testing.assert_array_equal(select_models(Chain("c", models=[1, 0]), [a, b])[:, :3], b)
    with pytest.raises(ValueError, match="only 2 descriptor set"):
        select_models(Chain("c", models=[2]), [a, b])
