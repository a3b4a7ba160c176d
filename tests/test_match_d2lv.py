"""D²LV's test-time protocol in isc-match (RECIPES §5.3): its query sub-image providers, per-model score
normalisation, sizes fused like models with votes inside a size, per-crop votes, crop-vs-whole branches,
the crop penalty sparing detector crops, and skipped reference crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from isc_research.data.disc import load_disc
from isc_research.detect.inference import OverlayDetector
from isc_research.detect.model import build_detector
from isc_research.extract import build_extractors
from isc_research.extract import EvalTransform, ModelExtractor, read_descriptors
from isc_research.match.candidates import view_candidates
from isc_research.match.crops import CropSet, FractionCrops, NoCrops, Rotations, View, check_views
from isc_research.match.fusion import voted
from isc_research.match.pipeline import match
from isc_research.match.proposals import SelectiveSearch, nms
from isc_research.match.views import ViewDescriptors, embed_views
from isc_research.model import DescriptorModel
from tests.conftest import compose_config
from tests.test_evaluate import MODEL_ARGS, SMOKE_DATASET, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIXTH = [1 / 6, 1 / 6, 0.5, 0.5]


def test_d2lv_query_crop_boxes_are_center_py_s():
    """The centre crop and the four quadrants of [1/6, 5/6]², cut at int(side·f) as center.py; rotations
    first; the set drops every sub-image under 200 px (D²LV's baseline folder)."""
    cfg = compose_config("match", ["query_crops=d2lv", "query_crops.providers.detector=null"])
    provider = instantiate(cfg.query_crops)
    crops = provider.providers[1]
    image = Image.new("RGB", (600, 300))
    assert crops.crops(image) == [
        (150, 75, 450, 225),
        (100, 50, 300, 150),
        (300, 50, 500, 150),
        (100, 150, 300, 250),
        (300, 150, 500, 250),
    ]
    views = provider.crops(image)
    assert [v.rotation for v in views[:3]] == [90, 180, 270] and all(v.box == (0, 0, 600, 300) for v in views[:3])
    assert provider.min_side == 200 and all(min(v.box[2] - v.box[0], v.box[3] - v.box[1]) >= 200 for v in views)
    assert not set(crops.crops(image)) & {v.box for v in views}  # the 150- and 100-px-high crops are dropped
    big = Image.new("RGB", (660, 660))
    assert {v.box for v in provider.crops(big)} >= set(crops.crops(big))  # 220- and 330-px crops are kept


def test_d2lv_reference_dividing_crops_are_dividing_py_s():
    """2×2 grid (size // 2), centre crop, 3×3 grid at int(w/3), int(2w/3), and the [1/6, 5/6]² quadrants."""
    provider = instantiate(compose_config("match", ["query_crops@reference_crops=d2lv_reference"]).reference_crops)
    boxes = provider.crops(Image.new("RGB", (300, 601)))
    assert len(boxes) == 18
    assert boxes[:5] == [
        (0, 0, 150, 300),
        (150, 0, 300, 300),
        (0, 300, 150, 601),
        (150, 300, 300, 601),
        (75, 150, 225, 450),
    ]
    assert boxes[5:8] == [(0, 0, 100, 200), (100, 0, 200, 200), (200, 0, 300, 200)]
    assert boxes[13] == (200, 400, 300, 601) and boxes[14] == (50, 100, 150, 300)


def test_crop_set_measures_min_side_in_file_pixels_and_skips_null_providers():
    image = Image.new("RGB", (100, 80))
    crops = {"quadrant": FractionCrops([SIXTH], min_side=1), "off": None}
    assert CropSet(crops, min_side=40).crops(image) == []  # 33 px < 40
    image.info["source_size"] = (400, 320)  # decoded at 1/4 size: the crop is 133 px in the file
    assert CropSet(crops, min_side=40).crops(image) == [View((16, 13, 50, 40), 0, True)]
    assert CropSet([Rotations([180])], min_side=500).crops(image) == []  # a 320-px-high rotation < 500
    assert CropSet([Rotations([180]), NoCrops()]).name == "rot180+none"
    with pytest.raises(ValueError, match="at least one provider"):
        CropSet({"a": None})
    with pytest.raises(ValueError, match="angles must be among"):
        Rotations([45])
    with pytest.raises(ValueError, match="0 <= x0 < x1 <= 1"):
        FractionCrops([[0.5, 0, 0.4, 1]])
    with pytest.raises(ValueError, match="rotation 45"):
        check_views([View((0, 0, 5, 5), 45)], image, NoCrops())


def test_rotated_views_are_embedded_rotated(data_dir, tmp_path):
    from dataclasses import replace

    records = load_disc(compose_config("match", [f"paths.data_dir={data_dir}", *SMOKE_DATASET]).dataset).queries[:2]
    torch.manual_seed(0)
    extractor = ModelExtractor(DescriptorModel(**MODEL_ARGS), EvalTransform(48), name="m")
    views = embed_views([extractor], records, Rotations([90]))[0]
    assert views.rotation.tolist() == [0, 90, 0, 90] and views.whole.tolist() == [True, False, True, False]
    turned = tmp_path / "turned.png"
    Image.open(records[1].path).convert("RGB").transpose(Image.Transpose.ROTATE_90).save(turned)
    expected = embed_views([extractor], [replace(records[1], path=turned)], NoCrops())[0].vectors[0]
    np.testing.assert_allclose(views.vectors[3], expected, atol=1e-5)
    assert not np.allclose(views.vectors[3], views.vectors[2], atol=1e-3)


def test_selective_search_finds_the_pasted_rectangles_and_applies_d2lv_filters():
    image = Image.new("RGB", (200, 160), (40, 120, 40))
    image.paste((230, 20, 20), (20, 30, 90, 110))  # 70×80 red block: 5,600 px
    image.paste((20, 20, 230), (120, 40, 180, 100))  # 60×60 blue block: 3,600 px
    image.paste((250, 250, 250), (100, 130, 190, 140))  # 90×10 white bar: aspect 9 > 2, 900 px

    def near(box, boxes):  # σ = 0.9 smoothing moves a segment's border by about a pixel
        return any(max(abs(a - b) for a, b in zip(box, other)) <= 2 for other in boxes)

    boxes = SelectiveSearch(min_size=10).crops(image)
    assert near((20, 30, 90, 110), boxes) and near((120, 40, 180, 100), boxes)
    assert not near((100, 130, 190, 140), boxes)
    assert all(max((b[2] - b[0]) / (b[3] - b[1]), (b[3] - b[1]) / (b[2] - b[0])) <= 2 for b in boxes)
    assert not near((20, 30, 90, 110), SelectiveSearch(min_region=6000).crops(image))  # below the region floor
    assert not near((120, 40, 180, 100), SelectiveSearch(min_region=6000).crops(image))  # 3,600 px too
    # NMS: IoU with the first box 0.67 > 0.5 dropped, a disjoint box kept (areas with D²LV's +1)
    assert nms(np.array([[0, 0, 9, 9], [0, 0, 9, 14], [20, 20, 29, 29]]), 0.5) == [0, 2]
    assert nms(np.array([[0, 0, 9, 9], [0, 0, 9, 14]]), 0.7) == [0, 1]


def test_detector_crops_are_unpenalised_above_a_strict_threshold_and_relax_the_network():
    arguments = {
        "arch": "fasterrcnn_mobilenet_v3_small_fpn",
        "min_size": 64,
        "max_size": 128,
        "box_score_thresh": 0.5,
        "box_detections_per_img": 4,
        "representation_size": 32,
    }
    torch.manual_seed(0)
    detector = OverlayDetector(build_detector(**arguments), min_confidence=0.01, max_boxes=20, device="cpu")
    assert detector.model.roi_heads.score_thresh == 0.01 and detector.model.roi_heads.detections_per_img == 20
    assert detector.penalised is False
    views = check_views([(0, 0, 4, 4)], Image.new("RGB", (8, 8)), detector)
    assert views == [View((0, 0, 4, 4), 0, False)]
    detector.detect = lambda image: [((1, 1, 5, 5), 0.02), ((0, 0, 4, 4), 0.01)]
    assert detector.crops(Image.new("RGB", (8, 8))) == [(1, 1, 5, 5)]  # > 0.01, as D²LV's rule


def test_view_candidates_inner_product_penalty_flags_and_crops_vs_whole():
    rng = np.random.default_rng(1)
    q = ViewDescriptors(
        np.array([0, 0, 0]),
        np.zeros((3, 4), np.int64),
        np.array([True, False, False]),
        rng.normal(size=(3, 6)).astype(np.float32),
        np.zeros(3, np.int64),
        np.array([False, True, False]),
    )
    r_owner = np.array([0, 0, 1, 1, 2])
    r = ViewDescriptors(
        r_owner,
        np.zeros((5, 4), np.int64),
        np.array([True, False, True, False, True]),
        rng.normal(size=(5, 6)).astype(np.float32),
    )
    hits = view_candidates(q, r, k=3, k_crops=3, crop_penalty=0.05, metric="ip")
    ip = q.vectors.astype(np.float64) @ r.vectors.T.astype(np.float64)
    for qv, ref, score in zip(hits.query_view, hits.reference, hits.score):
        best = ip[qv, r_owner == ref].max()  # raw inner products, not cosines
        assert score == pytest.approx(best - (0.05 if qv == 1 else 0.0), abs=1e-5)  # view 2 is unpenalised
    assert (~r.whole[hits.reference_view[hits.query_view > 0]]).any()  # crops found reference crops …
    split = view_candidates(q, r, k=3, k_crops=3, metric="ip", crops_vs_crops=False)
    assert r.whole[split.reference_view[split.query_view > 0]].all()  # … unless crops_vs_crops is false

    def same(e):
        return {
            (int(a), int(b), round(float(c), 5))
            for a, b, c, v in zip(e.reference, e.reference_view, e.score, e.query_view)
            if v == 0
        }

    assert same(split) == same(view_candidates(q, r, k=3, k_crops=3, metric="ip"))  # whole queries: unchanged
    with pytest.raises(ValueError, match="cosine or ip"):
        view_candidates(q, r, k=1, k_crops=1, metric="l2")


def test_voted_counts_distinct_sources_per_key():
    keys = np.array([5, 5, 5, 7, 7, 9])
    assert voted(keys, np.array([0, 0, 1, 2, 2, 0]), 2).tolist() == [True, True, True, False, False, False]
    assert voted(keys, None, 2).tolist() == [True, True, True, True, True, False]


@pytest.fixture
def run(tmp_path, data_dir):
    def make(*overrides: str, ckpts=None):
        ckpts = ckpts or [save_checkpoint(tmp_path / "a.ckpt")]
        return compose_config(
            "match",
            [
                f"paths.data_dir={data_dir}",
                f"paths.output_dir={tmp_path / 'out'}",
                "torch_threads=1",
                f"ckpt_path=[{','.join(map(str, ckpts))}]",
                *SMOKE_DATASET,
                "verifier=none",
                "fusion.combine=descriptor",
                "results_per_query=null",
                "candidates.max_per_query=null",
                *overrides,
            ],
        )

    return make


def test_score_normalisation_per_model_ranks_candidates(run, tmp_path):
    """postprocess=score_norm (mean of the top 3, factor 2): each candidate's score is q·r − 2·mean_top3(q·t)
    with the model's own training descriptors, as isc-eval's chain computes it."""
    cfg = run(
        "postprocess@candidates.postprocess=score_norm",
        "candidates.postprocess.steps.score_norm.n=3",
        "candidates.postprocess.steps.score_norm.reduction=mean",
        "candidates.k=3",
    )
    m = match(cfg)
    assert m["setup"]["postprocess"] == "score_norm(2·mean@3, ip)"
    data = load_disc(cfg.dataset)
    extractor = build_extractors(cfg)[0]
    q = embed_views([extractor], data.queries, NoCrops())[0].vectors.astype(np.float64)
    r = embed_views([extractor], data.references, NoCrops())[0].vectors.astype(np.float64)
    t = read_descriptors(tmp_path / "out" / "descriptors" / "size48_model0" / "training.h5")[1].astype(np.float64)
    offset = 2 * np.sort(q @ t.T, axis=1)[:, -3:].mean(axis=1)
    qi = {rec.id: i for i, rec in enumerate(data.queries)}
    ri = {rec.id: i for i, rec in enumerate(data.references)}
    rows = [line.split(",") for line in (tmp_path / "out" / "candidates.csv").read_text().splitlines()[1:]]
    assert rows
    for query, reference, score, *_ in rows:
        a, b = qi[query], ri[reference]
        assert float(score) == pytest.approx(q[a] @ r[b] - offset[a], abs=2e-5)
    assert m["descriptor_uAP"] >= 0  # the descriptor-only baseline stays on raw descriptors


def test_sizes_are_fused_like_models_with_votes_inside_a_size(run, tmp_path):
    """One model at two sizes gives one vote per pair: min_votes=2 over models keeps nothing, while two models
    keep the pairs both return within one size; fusion then takes the top-2 mean over sizes."""
    one = match(run("eval.size=[40,48]", "fusion.min_votes=2", "fusion.vote_over=models"))
    assert one["setup"]["sizes"] == [40, 48] and one["candidates"]["pairs"] == 0
    single = match(run("eval.size=[40,48]", "fusion.pairs=top2_mean", "overwrite=true"))
    at40 = match(run("eval.size=40", "fusion.pairs=max", "overwrite=true"))
    at48 = match(run("eval.size=48", "fusion.pairs=max", "overwrite=true"))
    assert single["candidates"]["pairs"] >= max(at40["candidates"]["pairs"], at48["candidates"]["pairs"])
    two = [save_checkpoint(tmp_path / "a.ckpt"), save_checkpoint(tmp_path / "b.ckpt", seed=1)]
    both = match(
        run("eval.size=[40,48]", "fusion.min_votes=2", "fusion.vote_per=query_view", "overwrite=true", ckpts=two)
    )
    assert both["candidates"]["pairs"] > 0 and both["setup"]["models"] == 2


def test_reference_crops_of_listed_references_are_not_searched(run, tmp_path):
    cfg = run("query_crops@reference_crops=grid")
    refs = [r.id for r in load_disc(cfg.dataset).references]
    listed = tmp_path / "faces.txt"
    listed.write_text("\n".join(refs) + "\n")
    m = match(run("query_crops@reference_crops=grid", f"candidates.skip_reference_crops_of={listed}"))
    assert m["candidates"]["reference_views"] == len(refs)  # whole references only
    listed.write_text("R_not_there\n")
    with pytest.raises(ValueError, match="not references of this dataset"):
        match(run("query_crops@reference_crops=grid", f"candidates.skip_reference_crops_of={listed}", "overwrite=true"))


def test_merge_predictions_of_another_run_keeps_the_higher_score_per_pair(run, tmp_path):
    """D²LV's "choice 2": this run's rows and another predictions.csv merged by max per pair, then max_rows."""
    from isc_research.formats import read_predictions

    first = match(run("max_rows=30"))
    mine = read_predictions(tmp_path / "out" / "predictions.csv")
    q0, r0, s0 = mine.query_ids[5], mine.reference_ids[5], mine.scores[5]
    refs = sorted({r.id for r in load_disc(run().dataset).references} - {str(x) for x in mine.reference_ids[:1]})
    other = tmp_path / "other.csv"
    other.write_text(
        "query_id,reference_id,score\n"
        f"{q0},{r0},{s0 + 10}\n"  # a pair of this run, scored higher: its score wins
        f"{mine.query_ids[0]},{mine.reference_ids[0]},{mine.scores[0] - 10}\n"  # lower: ignored
        f"{mine.query_ids[0]},{refs[0]},99\n"
    )  # a new pair
    merged = match(run("max_rows=30", f"merge_predictions={other}", "overwrite=true"))
    preds = read_predictions(tmp_path / "out" / "predictions.csv")
    rows = {(q, r): s for q, r, s in zip(preds.query_ids, preds.reference_ids, preds.scores)}
    assert len(preds) == 30 and first["uAP"] >= 0 and merged["uAP"] >= 0
    assert list(preds.scores[:2]) == [99, pytest.approx(s0 + 10)] and (str(mine.query_ids[0]), refs[0]) in rows
    assert rows[(str(mine.query_ids[0]), str(mine.reference_ids[0]))] == pytest.approx(mine.scores[0])


def test_max_per_source_keeps_the_best_entries_of_each_model(run, tmp_path):
    """candidates.max_per_source: the N best-scored entries of a (size, model) over all query views."""
    full = match(run("candidates.k=3"))
    rows = [line.split(",") for line in (tmp_path / "out" / "candidates.csv").read_text().splitlines()[1:]]
    best = sorted(float(r[2]) for r in rows)[-5:]
    capped = match(run("candidates.k=3", "candidates.max_per_source=5", "overwrite=true"))
    kept = [line.split(",") for line in (tmp_path / "out" / "candidates.csv").read_text().splitlines()[1:]]
    assert full["candidates"]["pairs"] > 5 and capped["candidates"]["pairs"] == 5
    assert sorted(float(r[2]) for r in kept) == pytest.approx(best)
