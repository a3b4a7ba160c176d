"""isc-eval: eval transforms and TTA, resumable HDF5 extraction, the ablation grid and its files, ensembles,
baselines through the same harness."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image

from isc_research.augment import eval_transform
from isc_research.cli.score import main as score_main
from isc_research.data.disc import load_disc
from isc_research.data.records import ImageRecord
from isc_research.evaluate import evaluate_checkpoint
from isc_research.augment.policies import ToNormalisedTensor
from isc_research.extract import (
    EvalTransform,
    ModelExtractor,
    _fingerprint,
    aspect_buckets,
    extract_to_hdf5,
    plan_batches,
    read_descriptors,
    view_shapes,
)
from isc_research.formats import read_descriptor_submission, read_predictions
from isc_research.metric import evaluate
from isc_research.model import DescriptorModel
from isc_research.search import global_candidates
from tests.conftest import compose_config

SMOKE = OmegaConf.load(Path(__file__).parents[1] / "conf" / "debug" / "smoke.yaml")
SMOKE_DATASET = [f"dataset.build.{k}={v}" for k, v in SMOKE.dataset.build.items()]
MODEL_ARGS = {"backbone": "test_resnet", "embedding_dim": 32, "gem_p": 3.0, "gem_learnable": False}


def save_checkpoint(path: Path, seed: int = 0, eval_size: int = 48) -> Path:
    """A checkpoint in isc-train's layout (model hyper-parameters, config, 'model.'-prefixed weights)."""
    torch.manual_seed(seed)
    model = DescriptorModel(**MODEL_ARGS)
    torch.save(
        {
            "hyper_parameters": {"model": MODEL_ARGS, "config": {"data": {"eval_size": eval_size}}},
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        },
        path,
    )
    return path


def eval_cfg(data_dir: Path, out: Path, *overrides: str):
    return compose_config(
        "eval",
        [
            f"paths.data_dir={data_dir}",
            f"paths.output_dir={out}",
            "eval.num_workers=0",
            "torch_threads=1",
            *SMOKE_DATASET,
            *overrides,
        ],
    )


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def ckpt(tmp_path) -> Path:
    return save_checkpoint(tmp_path / "a.ckpt")


def test_eval_transform_square_keep_aspect_and_scales():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8))
    square = EvalTransform(32)(image)
    assert len(square) == 1 and square[0].dtype == torch.uint8  # normalised on the extractor's device
    normalised = ToNormalisedTensor()(square[0])
    assert torch.equal(normalised, eval_transform(32)(image))  # = training's in-loop eval
    views = EvalTransform(32, "keep_aspect", [1.0, 0.5, 1.5])(image)
    assert [tuple(v.shape) for v in views] == [(3, 32, 48), (3, 16, 24), (3, 48, 72)]  # short side = size × scale
    tall = EvalTransform(20, "keep_aspect")(image.rotate(90, expand=True))
    assert tuple(tall[0].shape) == (3, 30, 20)
    with pytest.raises(ValueError, match="eval.resize"):
        EvalTransform(32, "crop")
    with pytest.raises(ValueError, match="scales"):
        EvalTransform(32, "square", [])


def test_tta_descriptor_is_the_normalised_sum_of_all_views():
    torch.manual_seed(0)
    model = DescriptorModel(**MODEL_ARGS).eval()
    images = [
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40 + 10 * i, 50, 3), dtype=np.uint8))
        for i in range(2)
    ]
    for resize in ("square", "keep_aspect"):
        transform = EvalTransform(32, resize, [1.0, 0.75])
        extractor = ModelExtractor(model, transform, flip=True)
        views = [transform(im) for im in images]
        got = extractor.embed([[v[j] for v in views] for j in range(2)])
        with torch.no_grad():
            expected = []
            for v in views:
                x = [ToNormalisedTensor()(x)[None] for x in v]
                total = sum(model(y) + model(torch.flip(y, dims=[-1])) for y in x)
                expected.append(F.normalize(total, dim=-1)[0].numpy())
        np.testing.assert_allclose(got, np.stack(expected), atol=1e-5)


def test_bf16_extraction_is_close_to_fp32_and_is_fingerprinted_apart():
    torch.manual_seed(0)
    model = DescriptorModel(**MODEL_ARGS).eval()
    transform = EvalTransform(32)
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 50, 3), dtype=np.uint8)) for i in range(4)]
    views = [[transform(im)[0] for im in images]]
    fp32, bf16 = (ModelExtractor(model, transform, precision=p) for p in ("32", "bf16"))
    a, b = fp32.embed(views), bf16.embed(views)
    assert b.dtype == np.float32 and not np.array_equal(a, b)  # autocast really ran in bf16
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert (a * b).sum(1).min() > 0.99
    assert fp32.fingerprint() != bf16.fingerprint() and "precision" not in fp32.fingerprint()
    with pytest.raises(ValueError, match="eval.precision must be one of"):
        ModelExtractor(model, transform, precision="fp8")


def test_eval_precision_reaches_the_extractors(ckpt, tmp_path, data_dir):
    from isc_research.extract import build_extractors

    for value in ("32", "bf16", "16"):
        (extractor,) = build_extractors(eval_cfg(data_dir, tmp_path, f"ckpt_path={ckpt}", f"eval.precision={value}"))
        assert extractor.precision == value
    with pytest.raises(ValueError, match="eval.precision must be one of"):
        build_extractors(eval_cfg(data_dir, tmp_path, f"ckpt_path={ckpt}", "eval.precision=8"))


class CountingExtractor:
    """Wraps an extractor; counts embed calls and can fail after a number of them (an interruption)."""

    def __init__(self, inner, fail_after: int | None = None):
        self.inner, self.fail_after, self.calls = inner, fail_after, 0
        self.transform = inner.transform

    def embed(self, views):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        return self.inner.embed(views)

    def fingerprint(self):
        return self.inner.fingerprint()


def test_extraction_resumes_after_an_interruption(tmp_path, data_dir):
    records = load_disc(eval_cfg(data_dir, tmp_path).dataset).training[:22]
    torch.manual_seed(0)
    model = DescriptorModel(**MODEL_ARGS)
    make = lambda: ModelExtractor(model, EvalTransform(32))  # noqa: E731
    args = dict(chunk_size=8, batch_size=3)  # chunks of 8 images = batches of 3, 3, 2; 3 chunks
    path = tmp_path / "train.h5"
    first = CountingExtractor(make(), fail_after=4)
    with pytest.raises(KeyboardInterrupt):
        extract_to_hdf5(first, records, path, **args)
    with h5py.File(path, "r") as f:
        assert f["chunk_done"][:].tolist() == [True, False, False]  # chunk 2 was half done: not flagged
    with pytest.raises(RuntimeError, match="incomplete"):
        read_descriptors(path)
    second = CountingExtractor(make())
    extract_to_hdf5(second, records, path, **args)
    assert second.calls == 5  # chunks 2 and 3 only (3 + 2 batches), chunk 1 skipped
    again = CountingExtractor(make())
    extract_to_hdf5(again, records, path, **args)
    assert again.calls == 0  # everything done
    ids, vectors = read_descriptors(path)
    fresh_ids, fresh = read_descriptors(extract_to_hdf5(make(), records, tmp_path / "fresh.h5", **args))
    assert ids.tolist() == fresh_ids.tolist() == [r.id for r in records]
    np.testing.assert_allclose(vectors, fresh, atol=1e-6)
    # another transform: the file is not reused
    other = CountingExtractor(ModelExtractor(model, EvalTransform(40)))
    extract_to_hdf5(other, records, path, **args)
    assert other.calls == 8


class SizeRecordingTransform(EvalTransform):
    def __init__(self, size):
        super().__init__(size)
        self.decoded = []

    def __call__(self, image):
        self.decoded.append(image.size)
        return super().__call__(image)


def test_draft_decoding_never_goes_below_the_eval_side(tmp_path):
    path = tmp_path / "R000001.jpg"
    y, x = np.mgrid[0:1500, 0:2000]
    Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)).save(path, quality=85)
    records = [ImageRecord("R000001", "reference", path)]
    model = DescriptorModel(**MODEL_ARGS)
    for side, decoded in ((32, (250, 188)), (300, (500, 375))):  # draft 64: 1/8 scale, unless the side needs more
        transform = SizeRecordingTransform(side)
        extract_to_hdf5(ModelExtractor(model, transform), records, tmp_path / f"{side}.h5", draft_size=64)
        assert transform.decoded == [decoded]


def test_extraction_rebuilds_a_corrupt_file_and_skips_bad_images(tmp_path, data_dir):
    records = load_disc(eval_cfg(data_dir, tmp_path).dataset).queries[:5]
    path = tmp_path / "q.h5"
    path.write_bytes(b"killed mid-write")
    bad = tmp_path / "Q99999.jpg"
    bad.write_bytes(b"not an image")
    records = records + [type(records[0])("Q99999", "query", bad)]
    torch.manual_seed(0)
    extractor = ModelExtractor(DescriptorModel(**MODEL_ARGS), EvalTransform(32))
    with pytest.raises(ValueError, match="Q99999.jpg"):
        extract_to_hdf5(extractor, records, path, chunk_size=4)
    extract_to_hdf5(extractor, records, path, chunk_size=4, skip_bad_images=True)
    ids, vectors = read_descriptors(path)
    assert ids.tolist() == [r.id for r in records[:5]] and vectors.shape == (5, 32)


# the ablation grid's two push-away chains (per-vector and neighbour-axis forms) with K=20 on 48 training images
PUSH_AWAY_K20 = [f"eval_grid.chains.{c}.steps.push_away.k=20" for c in ("push_away", "push_away_notebook")]


def test_ablation_grid_end_to_end(ckpt, tmp_path, data_dir, capsys):
    out = tmp_path / "eval"
    cfg = eval_cfg(
        data_dir, out, f"ckpt_path={ckpt}", "eval_grid=ablation", *PUSH_AWAY_K20
    )  # the tiny set has 48 training images
    summary = evaluate_checkpoint(cfg)
    names = [
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
    assert list(summary["chains"]) == names and summary["primary_chain"] == "raw"
    for name in ("metrics.json", "predictions.csv", "descriptors.h5", "pr_curve.png", "ablation.csv", "ablation.md"):
        assert (out / name).is_file(), name
    assert (out / "pr_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "ablation.csv").read_text().splitlines()
    assert table[0].startswith("chain,steps,metric,dims,uAP,recall_at_p90,recall_at_rank1")
    assert [line.split(",")[0] for line in table[1:]] == names
    md = (out / "ablation.md").read_text()
    assert "| sscd | pcaw(in) → l2 → score_norm(1·mean@3, ip) | ip | 33 |" in md

    # the raw row is exactly: descriptors from the HDF5 files → official global candidates → µAP
    data = load_disc(cfg.dataset)
    qids, q = read_descriptors(out / "descriptors" / "model0" / "query.h5")
    rids, r = read_descriptors(out / "descriptors" / "model0" / "reference.h5")
    expected = evaluate(data.ground_truth, global_candidates(q, r, qids, rids)).to_dict()
    assert summary["chains"]["raw"]["uAP"] == pytest.approx(expected["uAP"], abs=1e-12)
    assert summary["uAP"] == summary["chains"]["raw"]["uAP"]
    # chains differ, and the two forms of score normalisation rank identically
    uaps = {k: v["uAP"] for k, v in summary["chains"].items()}
    assert len({round(v, 6) for v in uaps.values()}) >= 6
    assert uaps["score_norm"] == pytest.approx(uaps["score_norm_l2"], abs=1e-9)
    # files are valid submissions that isc-score scores to the same numbers
    gt = data.root / "ground_truth.csv"
    capsys.readouterr()
    assert score_main(["--gt", str(gt), "--descriptors", str(out / "descriptors.h5")]) == 0
    assert json.loads(capsys.readouterr().out)["uAP"] == pytest.approx(summary["uAP"], abs=1e-5)
    sscd_preds = read_predictions(out / "chains" / "sscd" / "predictions.csv")
    assert evaluate(data.ground_truth, sscd_preds).uAP == pytest.approx(uaps["sscd"], abs=1e-4)
    assert read_descriptor_submission(out / "descriptors.h5").query.shape[1] == 32

    # a rerun (overwrite=true: the folder holds a finished run) reuses the descriptors and gives the same table
    stamp = (out / "descriptors" / "model0" / "training.h5").stat().st_mtime_ns
    again = evaluate_checkpoint(OmegaConf.merge(cfg, {"overwrite": True}))
    assert (out / "descriptors" / "model0" / "training.h5").stat().st_mtime_ns == stamp
    assert again["chains"]["sscd"]["uAP"] == uaps["sscd"]


def test_submissions_for_every_l2_chain_and_none_for_inner_product(ckpt, tmp_path, data_dir, capsys):
    out = tmp_path / "eval"
    cfg = eval_cfg(
        data_dir,
        out,
        f"ckpt_path={ckpt}",
        "eval_grid=ablation",
        "eval.write_submissions=all",
        *PUSH_AWAY_K20,
        "eval.candidates=knn",
        "eval.k=3",
    )
    summary = evaluate_checkpoint(cfg)
    assert not (out / "chains" / "score_norm" / "descriptors.h5").exists()  # ip: the L2 scorer cannot use it
    gt = load_disc(cfg.dataset).root / "ground_truth.csv"
    for name in ("score_norm_l2", "push_away"):
        capsys.readouterr()
        assert (
            score_main(["--gt", str(gt), "--descriptors", str(out / "chains" / name / "descriptors.h5"), "--knn", "3"])
            == 0
        )
        assert json.loads(capsys.readouterr().out)["uAP"] == pytest.approx(summary["chains"][name]["uAP"], abs=1e-5)
    assert summary["chains"]["raw"]["n_predictions"] == 3 * 16


def test_ensemble_grid(tmp_path, data_dir):
    a, b = save_checkpoint(tmp_path / "a.ckpt", 0), save_checkpoint(tmp_path / "b.ckpt", 1)
    cfg = eval_cfg(
        data_dir,
        tmp_path / "ens",
        f"ckpt_path=[{a},{b}]",
        "eval_grid=ensemble",
        "eval_grid.chains.ensemble.steps.pcaw.dim=40",
    )
    chains = evaluate_checkpoint(cfg)["chains"]
    assert [chains[n]["dims"] for n in ("model0", "model1", "concat", "ensemble")] == [32, 32, 64, 40]
    single = evaluate_checkpoint(eval_cfg(data_dir, tmp_path / "single", f"ckpt_path={a}"))
    assert chains["model0"]["uAP"] == pytest.approx(single["uAP"], abs=1e-12)
    assert chains["model0"]["uAP"] != chains["model1"]["uAP"]


@pytest.mark.parametrize("baseline", ["thumbnail", "phash", "pdq"])
def test_baselines_run_through_the_same_harness(tmp_path, data_dir, baseline):
    summary = evaluate_checkpoint(eval_cfg(data_dir, tmp_path / baseline, f"baseline={baseline}"))
    dims = {"thumbnail": 256, "phash": 64, "pdq": 256}[baseline]
    assert summary["chains"]["raw"]["dims"] == dims and 0.0 < summary["uAP"] <= 1.0


def test_configuration_errors(tmp_path, data_dir, ckpt):
    with pytest.raises(ValueError, match="needs ckpt_path=PATH"):
        evaluate_checkpoint(eval_cfg(data_dir, tmp_path / "x"))
    with pytest.raises(ValueError, match="either ckpt_path or baseline"):
        evaluate_checkpoint(eval_cfg(data_dir, tmp_path / "x", f"ckpt_path={ckpt}", "baseline=phash"))
    with pytest.raises(ValueError, match="baseline='sift' is unknown"):
        evaluate_checkpoint(eval_cfg(data_dir, tmp_path / "x", "baseline=sift"))
    with pytest.raises(ValueError, match="only 48"):  # push-away's K=100 on 48 training images
        evaluate_checkpoint(eval_cfg(data_dir, tmp_path / "x", f"ckpt_path={ckpt}", "eval_grid=ablation"))
    with pytest.raises(ValueError, match="write_submissions"):
        evaluate_checkpoint(eval_cfg(data_dir, tmp_path / "x", f"ckpt_path={ckpt}", "eval.write_submissions=some"))


def _aspect_images(folder: Path) -> list[ImageRecord]:
    """JPEGs of a few aspect ratios in shuffled order (wide, tall, near-square; some sizes repeated)."""
    sizes = [
        (90, 60),
        (60, 90),
        (91, 60),
        (88, 60),
        (70, 66),
        (60, 90),
        (90, 60),
        (92, 61),
        (60, 120),
        (75, 60),
        (90, 60),
        (61, 92),
        (120, 60),
    ]
    records = []
    for i, (w, h) in enumerate(sizes):
        path = folder / f"A{i:02d}.jpg"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        records.append(ImageRecord(f"A{i:02d}", "query", path))
    return records


class CountingModel(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.batches = inner, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(tuple(x.shape))
        return self.inner(x)


def test_aspect_buckets_group_whole_batches_by_ratio_deterministically():
    # landscape ratios 1.0 … 3.0, portrait 1.25, 1.5, 1.5, one unreadable header; batches of 2
    sizes = [
        (100, 100),
        (110, 100),
        (120, 100),
        (130, 100),
        (150, 100),
        (160, 100),
        (200, 100),
        (300, 100),
        (100, 125),
        (100, 150),
        (100, 150),
        (0, 0),
    ]
    narrow = aspect_buckets(sizes, 2, 0.15)  # no two runs within 0.15: one shape per run, its median ratio
    np.testing.assert_allclose(narrow[:8], [1.05, 1.05, 1.25, 1.25, 1.55, 1.55, 2.5, 2.5])
    np.testing.assert_allclose(narrow[8:11], [1 / 1.375, 1 / 1.375, 1 / 1.5])  # portrait: width / height < 1
    assert np.isnan(narrow[11])
    wide = aspect_buckets(sizes, 2, 0.5)  # runs 1.0–1.1 and 1.2–1.3 merge (span 0.3), 1.5 would make it 0.6
    np.testing.assert_allclose(wide[:8], [1.15, 1.15, 1.15, 1.15, 1.55, 1.55, 2.5, 2.5])
    np.testing.assert_allclose(wide[8:11], [1 / 1.5] * 3)
    order = np.random.default_rng(0).permutation(len(sizes))  # no ties across groups: the order does not matter
    np.testing.assert_array_equal(aspect_buckets([sizes[i] for i in order], 2, 0.5), wide[order])
    np.testing.assert_array_equal(aspect_buckets(sizes, 2, 0.5), wide)
    with pytest.raises(ValueError, match="step"):
        aspect_buckets(sizes, 2, 0.0)


def test_aspect_buckets_groups_hold_whole_batches_and_keep_orientation():
    rng = np.random.default_rng(1)
    ratio = np.exp(rng.uniform(np.log(0.5), np.log(2.5), 1000))
    sizes = [(round(400 * r), 400) for r in ratio]
    aspects = aspect_buckets(sizes, 16, 0.125)
    actual = np.array([w / h for w, h in sizes])
    assert ((aspects >= 1) == (actual >= 1)).all()  # no image turned from portrait to landscape or back
    for landscape in (True, False):
        mine = (actual >= 1) == landscape
        groups, counts = np.unique(aspects[mine], return_counts=True)
        biggest = groups.max() if landscape else groups.min()  # the group of the most elongated images
        assert all(c % 16 == 0 for g, c in zip(groups, counts) if g != biggest)
        assert counts.sum() == mine.sum()
    # dense ratios: every run of 16 spans less than the step, so a group spans at most the step, and each image's
    # ratio (long / short: the long side in units of the short) moves by at most the step
    moved = np.abs(np.maximum(aspects, 1 / aspects) - np.maximum(actual, 1 / actual))
    assert 0.05 < moved.max() <= 0.125
    assert len(np.unique(aspects)) < 40  # runs merged into far fewer shapes than the 63 batches


def _chunk_shapes(n: int, seed: int = 0) -> list[tuple]:
    rng = np.random.default_rng(seed)
    aspects = aspect_buckets([(int(w), 60) for w in rng.integers(40, 120, n)], 8, 0.125)
    transform = EvalTransform(32, "keep_aspect", aspect_step=0.125)
    return [tuple(transform.shapes(1, 1, a)) for a in aspects]


def test_plan_batches_full_except_one_per_shape_across_chunks():
    shapes = _chunk_shapes(403)
    batches = plan_batches(shapes, list(range(9)), 50, 8)
    assert sorted(i for b in batches for i in b) == list(range(403))  # every image once
    partial: dict[tuple, int] = {}
    for b in batches:
        assert len({shapes[i] for i in b}) == 1  # one shape per forward
        assert len(b) <= 8
        if len(b) < 8:
            partial[shapes[b[0]]] = partial.get(shapes[b[0]], 0) + 1
    assert max(partial.values()) == 1  # at most one partial batch per shape
    assert any(len({i // 50 for i in b}) > 1 for b in batches)  # batches cross chunks rather than end with them
    assert plan_batches(shapes, list(range(9)), 50, 8) == batches  # deterministic
    # resuming (chunks 0 and 3 done): the pending chunks only
    assert {i // 50 for b in plan_batches(shapes, [1, 2, 4, 5, 6, 7, 8], 50, 8) for i in b} == {1, 2, 4, 5, 6, 7, 8}


def test_plan_batches_bounds_how_long_a_rare_shape_waits():
    shapes = [("common",)] * 200
    for i in range(0, 200, 10):  # one image of a rare shape per chunk of 10
        shapes[i] = ("rare",)
    batches = plan_batches(shapes, list(range(20)), 10, 8, max_lag=3)
    rare = [b for b in batches if shapes[b[0]] == ("rare",)]
    assert [len(b) for b in rare] == [4, 4, 4, 4, 4]  # run once its oldest image is 3 chunks behind
    position = {i: p for p, b in enumerate(batches) for i in b}
    for b in rare:  # a chunk's last descriptor comes at most 3 chunks of work later
        common_after = [i for i in range(200) if shapes[i] == ("common",) and position[i] < position[b[0]]]
        assert max(common_after) // 10 - b[0] // 10 <= 3


@pytest.mark.parametrize("aspect_step", [None, 0.25])
def test_keep_aspect_batches_by_shape_keep_ids_and_equal_one_image_per_forward(tmp_path, aspect_step):
    records = _aspect_images(tmp_path)
    torch.manual_seed(0)
    model = CountingModel(DescriptorModel(**MODEL_ARGS).eval())
    transform = EvalTransform(32, "keep_aspect", [1.0, 0.5], aspect_step=aspect_step)
    extractor = ModelExtractor(model, transform, flip=True)
    path = extract_to_hdf5(extractor, records, tmp_path / "d.h5", batch_size=4, chunk_size=7)
    ids, vectors = read_descriptors(path)
    assert ids.tolist() == [r.id for r in records]  # the file keeps the record order
    shapes, aspects = view_shapes(records, transform, batch_size=4)
    assert (aspects is None) == (aspect_step is None)
    with torch.no_grad():  # one image per forward, views normalised one by one, each of its planned shape
        expected = []
        for i, r in enumerate(records):
            views = [
                ToNormalisedTensor()(v)[None]
                for v in transform(Image.open(r.path), aspect=None if aspects is None else aspects[i])
            ]
            assert tuple(tuple(v.shape[2:]) for v in views) == shapes[i]
            total = sum(model(v) + model(torch.flip(v, dims=[-1])) for v in views)
            expected.append(F.normalize(total, dim=-1)[0].numpy())
    model.batches.clear()
    batches = plan_batches(shapes, [0, 1], 7, 4)
    path = extract_to_hdf5(extractor, records, tmp_path / "again.h5", batch_size=4, chunk_size=7)
    np.testing.assert_allclose(read_descriptors(path)[1], np.stack(expected), rtol=0, atol=2e-6)
    np.testing.assert_allclose(vectors, np.stack(expected), rtol=0, atol=2e-6)
    assert len(model.batches) == len(batches) * 2 * 2  # one shape per batch: one forward per scale and flip
    partial = [shapes[b[0]] for b in batches if len(b) < 4]
    assert len(partial) == len(set(partial))  # at most one partial batch per shape
    # the batch size sets the bucketed shapes, so it is part of the cache key then (and only then)
    assert (_fingerprint(extractor, records, False, 4) != _fingerprint(extractor, records, False, 3)) == (
        aspect_step is not None
    )
    if aspect_step is None:
        assert len(set(shapes)) == 8
    else:  # 9 landscape, 4 portrait images in batches of 4: 4 batches, the last of each orientation partial
        assert len(set(shapes)) == 4 and len(batches) == 4
        assert sorted(len(b) for b in batches) == [1, 4, 4, 4]
        for r, s in zip(records, shapes):  # orientation kept
            w, h = Image.open(r.path).size
            assert (s[0][1] >= s[0][0]) == (w >= h)
