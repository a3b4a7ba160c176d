"""isc-match end to end on the tiny mini-DISC: metrics, files scored by isc-score, pluggable verifiers and crop
providers (Hydra _target_), view candidates against a plain loop, the 500,000-row limit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from isc_research.cli.score import main as score_main
from isc_research.data.disc import load_disc
from isc_research.formats import FormatError, read_ground_truth, read_predictions, write_predictions
from isc_research.match.candidates import view_candidates
from isc_research.match.pipeline import match
from isc_research.match.views import ViewDescriptors, embed_views
from isc_research.extract import EvalTransform, ModelExtractor
from isc_research.metric import Predictions
from isc_research.model import DescriptorModel
from tests.conftest import compose_config
from tests.test_evaluate import MODEL_ARGS, SMOKE_DATASET, save_checkpoint


class ThumbnailVerifier:
    """A test verifier: minus the mean absolute difference of 8×8 grey thumbnails; counts its calls."""

    name = "thumbnail-l1"

    def __init__(self, side: int = 8) -> None:
        self.side, self.calls, self.pairs = side, 0, 0

    def score(self, q: Image.Image, r: Image.Image) -> float:
        a, b = (np.asarray(x.convert("L").resize((self.side, self.side)), np.float64) for x in (q, r))
        return -float(np.abs(a - b).mean())

    def score_pairs(self, queries, references):
        self.calls += 1
        self.pairs += len(queries)
        return np.array([self.score(q, r) for q, r in zip(queries, references)])


class CornerCrops:
    """A test crop provider: the top-left quarter."""

    name = "corner"

    def crops(self, image):
        return [(0, 0, image.width // 2, image.height // 2)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def run(tmp_path, data_dir):
    ckpt = save_checkpoint(tmp_path / "a.ckpt")

    def make(*overrides: str):
        return compose_config(
            "match",
            [
                f"paths.data_dir={data_dir}",
                f"paths.output_dir={tmp_path / 'out'}",
                "torch_threads=1",
                f"ckpt_path={ckpt}",
                *SMOKE_DATASET,
                *overrides,
            ],
        )

    return make


@pytest.mark.slow
def test_match_end_to_end_with_sift_and_crops(run, tmp_path, capsys):
    cfg = run(
        "query_crops=grid",
        "query_crops@reference_crops=center",
        "verify.views=both",
        "fusion.pairs=top2_mean",
        "results_per_query=null",
    )
    m = match(cfg)
    assert "candidates_uAP" in m
    assert m["verification"]["verifier"] == "sift-inliers-homography"
    assert m["verification"]["pairs"] == m["candidates"]["pairs"] > 0
    assert m["verification"]["ms_per_query"] > 0 and m["verification"]["ms_per_pair"] > 0
    assert m["candidates"]["query_views"] == 16 * 5 and m["candidates"]["reference_views"] == 24 * 2
    out = tmp_path / "out"
    assert json.loads((out / "metrics.json").read_text())["uAP"] == m["uAP"]
    data = load_disc(cfg.dataset)
    preds = read_predictions(
        out / "predictions.csv",
        known_query_ids=[r.id for r in data.queries],
        known_reference_ids=[r.id for r in data.references],
    )
    assert len(preds) == m["candidates"]["pairs"] and (np.diff(preds.scores) <= 0).all()
    # every candidate pair is in the file (results_per_query=null): the candidate recall is its share of the truth
    gt = read_ground_truth(data.root / "ground_truth.csv")
    listed = set(zip(preds.query_ids.tolist(), preds.reference_ids.tolist()))
    assert gt.n_pairs > 0 and m["candidate_recall"] == sum(p in listed for p in gt.matches.items()) / gt.n_pairs
    capsys.readouterr()
    assert score_main(["--gt", str(data.root / "ground_truth.csv"), "--predictions", str(out / "predictions.csv")]) == 0
    assert json.loads(capsys.readouterr().out)["uAP"] == pytest.approx(m["uAP"], abs=1e-5)
    # the descriptor-only µAP is isc-eval's raw chain on the whole images
    from isc_research.evaluate import evaluate_checkpoint

    raw = evaluate_checkpoint(compose_config("eval", [*cfg_overrides(cfg), f"paths.output_dir={tmp_path / 'eval'}"]))
    assert m["descriptor_uAP"] == pytest.approx(raw["uAP"], abs=1e-9)


def cfg_overrides(cfg) -> list[str]:
    return [
        f"paths.data_dir={cfg.paths.data_dir}",
        f"ckpt_path={cfg.ckpt_path}",
        "torch_threads=1",
        "eval.num_workers=0",
        *SMOKE_DATASET,
    ]


def test_a_pluggable_verifier_and_crop_provider(run, tmp_path):
    # verifier=none has only a _target_: replace it (a YAML in conf/verifier/ does the same)
    cfg = run(
        "verifier=none",
        "verifier._target_=tests.test_match.ThumbnailVerifier",
        "+verifier.side=4",
        "query_crops._target_=tests.test_match.CornerCrops",
        "fusion.combine=verifier",
        "results_per_query=2",
        "max_rows=20",
        "verify.batch_pairs=7",
    )
    m = match(cfg)
    assert m["setup"]["verifier"] == "thumbnail-l1" and m["setup"]["query_crops"] == "corner"
    assert m["candidates"]["query_views"] == 32
    data = load_disc(cfg.dataset)
    preds = read_predictions(tmp_path / "out" / "predictions.csv")
    assert len(preds) == 20  # 16 queries × 2 per query, capped at max_rows, best scores kept
    assert np.bincount(np.unique(preds.query_ids, return_inverse=True)[1]).max() <= 2
    # combine=verifier: the submitted score is the test verifier's score of the whole images
    by_id = {r.id: r.path for r in data.queries + data.references}
    check = ThumbnailVerifier(side=4)
    for q, r, s in zip(preds.query_ids[:5], preds.reference_ids[:5], preds.scores[:5]):
        assert s == pytest.approx(check.score(Image.open(by_id[q]), Image.open(by_id[r])), abs=1e-6)
    rows = (tmp_path / "out" / "candidates.csv").read_text().splitlines()
    assert rows[0] == "query_id,reference_id,descriptor_score,verifier_score,score,votes"
    assert len(rows) - 1 == m["verification"]["pairs"]


def test_no_verifier_keeps_the_descriptor_ranking(run, tmp_path):
    m = match(run("verifier=none", "results_per_query=null", "candidates.max_per_query=null"))
    assert m["verification"]["pairs"] == 0 and m["setup"]["combine"] == "descriptor"
    assert m["uAP"] == pytest.approx(m["candidates_uAP"], abs=1e-12)


class CountingCorners(CornerCrops):
    def __init__(self):
        self.calls = 0

    def crops(self, image):
        self.calls += 1
        return super().crops(image)


def test_an_ensemble_decodes_and_crops_each_image_once(run, tmp_path):
    records = load_disc(run().dataset).queries[:4]
    extractors = []
    for seed, size in ((0, 32), (1, 48)):  # two models with different eval sizes
        torch.manual_seed(seed)
        extractors.append(ModelExtractor(DescriptorModel(**MODEL_ARGS), EvalTransform(size), name=f"model{seed}"))
    provider = CountingCorners()
    both = embed_views(extractors, records, provider, batch_size=3)
    assert provider.calls == len(records)  # once per image, not once per model
    for extractor, views in zip(extractors, both):
        alone = embed_views([extractor], records, CornerCrops())[0]
        assert views.vectors.shape == alone.vectors.shape == (8, 32)
        np.testing.assert_allclose(views.vectors, alone.vectors, atol=1e-6)
        assert (views.boxes == both[0].boxes).all() and (views.owner == alone.owner).all()


def test_configuration_errors_come_before_any_work(run):
    with pytest.raises(TypeError, match="must have score_pairs"):
        match(run("verifier=none", "verifier._target_=isc_research.match.crops.NoCrops"))
    with pytest.raises(ValueError, match="verify.views must be one of"):
        match(run("verify.views=crops"))
    with pytest.raises(ValueError, match="fusion.vote_over must be models or views"):
        match(run("fusion.vote_over=crops"))
    with pytest.raises(ValueError, match="eval.aspect_step=0.125 is for isc-eval"):
        match(run("eval.resize=keep_aspect", "eval.aspect_step=0.125"))


@pytest.mark.parametrize(
    "group, options",
    [("verifier", ["none", "sift", "orb"]), ("query_crops", ["none", "grid", "center", "d2lv_reference"])],
)
def test_every_config_of_the_groups_instantiates(group, options):
    for option in options:
        obj = instantiate(compose_config("match", [f"{group}={option}"])[group])
        assert isinstance(obj.name, str)
        assert callable(getattr(obj, "score_pairs" if group == "verifier" else "crops"))


def test_view_candidates_match_a_plain_loop():
    rng = np.random.default_rng(0)
    q = ViewDescriptors(
        np.array([0, 0, 1, 2, 2]),
        np.zeros((5, 4), np.int64),
        np.array([True, False, True, True, False]),
        rng.normal(size=(5, 8)).astype(np.float32),
    )
    r_owner = np.array([0, 0, 0, 1, 2, 2, 3, 4, 4, 5])
    r = ViewDescriptors(
        r_owner,
        np.zeros((10, 4), np.int64),
        np.r_[True, np.diff(r_owner) != 0],
        rng.normal(size=(10, 8)).astype(np.float32),
    )
    k, k_crops, penalty = 3, 2, 0.05
    hits = view_candidates(q, r, k=k, k_crops=k_crops, crop_penalty=penalty)
    qn = q.vectors / np.linalg.norm(q.vectors, axis=1, keepdims=True)
    rn = r.vectors / np.linalg.norm(r.vectors, axis=1, keepdims=True)
    expected = set()
    for i in range(len(q)):
        best: dict[int, float] = {}
        for j in range(len(r)):
            s = float(np.dot(qn[i].astype(np.float64), rn[j].astype(np.float64)))
            best[int(r_owner[j])] = max(best.get(int(r_owner[j]), -np.inf), s)
        top = sorted(best.items(), key=lambda t: -t[1])[: k if q.whole[i] else k_crops]
        expected |= {(i, ref, round(s - (0 if q.whole[i] else penalty), 5)) for ref, s in top}
    got = {(int(a), int(b), round(float(s), 5)) for a, b, s in zip(hits.query_view, hits.reference, hits.score)}
    assert got == expected
    assert (hits.query == q.owner[hits.query_view]).all()


def test_predictions_over_the_official_limit_are_refused(tmp_path, capsys):
    n = 500_001
    many = Predictions(np.char.add("Q", np.arange(n).astype(str)), np.full(n, "R000000"), np.zeros(n))
    with pytest.raises(FormatError, match="more than 500000 prediction rows"):
        write_predictions(tmp_path / "p.csv", many)
    path = tmp_path / "big.csv"
    path.write_text("query_id,reference_id,score\n" + "".join(f"Q{i},R0,0.5\n" for i in range(n)))
    gt = tmp_path / "gt.csv"
    gt.write_text("query_id,reference_id\nQ0,R0\n")
    capsys.readouterr()
    assert score_main(["--gt", str(gt), "--predictions", str(path)]) == 2
    assert "more than 500000 prediction rows" in capsys.readouterr().err


def test_a_classical_baseline_instead_of_a_checkpoint(run, tmp_path):
    """`isc-match baseline=thumbnail` (conf/match.yaml): the hash/thumbnail extractor embeds isc-match's views
    (a list of vectors, not isc-eval's shape groups), and its descriptor-only µAP is isc-eval's for the baseline."""
    cfg = run("ckpt_path=null", "baseline=thumbnail", "verifier=none", "query_crops=none")
    m = match(cfg)
    from isc_research.evaluate import evaluate_checkpoint

    raw = evaluate_checkpoint(
        compose_config(
            "eval",
            [
                f"paths.data_dir={cfg.paths.data_dir}",
                "baseline=thumbnail",
                "torch_threads=1",
                "eval.num_workers=0",
                *SMOKE_DATASET,
                f"paths.output_dir={tmp_path / 'eval'}",
            ],
        )
    )
    assert m["descriptor_uAP"] == pytest.approx(raw["uAP"], abs=1e-9)
