"""isc-search: index a folder, query with edited copies (true source first, flagged as a copy), incremental adds,
unreadable images reported, an existing index never overwritten without --overwrite, the calibrated threshold."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from isc_research.cli import search as search_cli
from isc_research.cli.search import main
from isc_research.augment.edits import EDITS, EditContext
from isc_research.data.mini_disc import MiniDiscSpec, ensure_mini_disc
from isc_research.images import load_image
from isc_research.index.calibrate import threshold_at_precision
from isc_research.index.store import SearchIndex
from isc_research.metric import GroundTruth, Predictions, evaluate
from isc_research.model import DescriptorModel

MODEL_ARGS = {"backbone": "test_resnet", "embedding_dim": 32, "gem_p": 3.0, "gem_learnable": False}
SMOKE = OmegaConf.load(Path(__file__).parents[1] / "conf" / "debug" / "smoke.yaml")
COPY_EDITS = ("jpeg", "overlay_text", "overlay_emoji")  # edits a randomly initialised test_resnet still sees through


@pytest.fixture(autouse=True)
def one_torch_thread(monkeypatch):
    """Tiny models on a busy 2-core machine: one intra-op thread, whatever --threads (still validated) says."""
    real = search_cli._set_threads

    def validate_then_one(setting, workers):
        real(setting, workers)
        torch.set_num_threads(1)

    monkeypatch.setattr(search_cli, "_set_threads", validate_then_one)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _edit(image, names, seed):
    rng = np.random.default_rng(seed)
    for name in names:
        image = EDITS[name](image, rng, EditContext())
    return image


@pytest.fixture(scope="module")
def world(tmp_path_factory, data_dir):
    """A random-weight checkpoint (with no dataset of its own), a folder of 24 photos (the smoke mini-DISC's
    references), a DISC-layout calibration set made of other photos (12 edited copies, 12 distractors, 24
    references), and edited copies of 6 of the photos as queries."""
    spec = MiniDiscSpec(**SMOKE.dataset.build)
    mini = ensure_mini_disc(data_dir / "mini_disc" / spec.name(), spec)
    root = tmp_path_factory.mktemp("search")
    torch.manual_seed(0)
    model = DescriptorModel(**MODEL_ARGS)
    ckpt = root / "random.ckpt"
    torch.save(
        {
            "hyper_parameters": {"model": MODEL_ARGS, "config": {"data": {"eval_size": 48}}},
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        },
        ckpt,
    )
    photos = root / "photos"
    photos.mkdir()
    for p in sorted((mini / "reference").iterdir()):
        shutil.copy(p, photos / f"photo_{p.stem}{p.suffix}")
    others = sorted((mini / "training").iterdir())
    calib = root / "calib"
    for d in ("query", "reference"):
        (calib / d).mkdir(parents=True)
    for i, p in enumerate(others[:24]):
        shutil.copy(p, calib / "reference" / f"R{i:06d}{p.suffix}")
    gt = []
    for i in range(24):  # Q0..11 copies of R0..11 (two edits each), Q12..23 photos without a reference
        if i < 12:
            edits = (COPY_EDITS[i % 3], COPY_EDITS[(i + 1) % 3])
            _edit(load_image(others[i]), edits, i).save(calib / "query" / f"Q{i:05d}.png")
        else:
            shutil.copy(others[12 + i], calib / "query" / f"Q{i:05d}{others[12 + i].suffix}")
        gt.append((f"Q{i:05d}", f"R{i:06d}" if i < 12 else ""))
    (calib / "ground_truth.csv").write_text("query_id,reference_id\n" + "".join(f"{q},{r}\n" for q, r in gt))
    queries = root / "queries"
    queries.mkdir()
    sources = sorted(photos.iterdir())[:6]
    for i, p in enumerate(sources):  # one mild edit each
        _edit(load_image(p), (COPY_EDITS[i % 3],), 100 + i).save(queries / f"copy_of_{p.stem}.png")
    own = root / "own_data.ckpt"  # the same weights, recording the smoke mini-DISC it was "validated" on
    recorded = OmegaConf.to_container(OmegaConf.load(Path(__file__).parents[1] / "conf" / "dataset" / "mini_disc.yaml"))
    dataset = {**recorded, "root": str(data_dir / "mini_disc"), "build": dict(SMOKE.dataset.build)}
    torch.save(
        {
            "hyper_parameters": {"model": MODEL_ARGS, "config": {"data": {"eval_size": 48}, "dataset": dataset}},
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        },
        own,
    )
    return {"ckpt": ckpt, "own": own, "mini": mini, "photos": photos, "calib": calib, "queries": queries, "root": root}


def _build(world, index: Path, *extra: str) -> int:
    return main(
        [
            "build",
            str(index),
            str(world["photos"]),
            "--checkpoint",
            str(world["ckpt"]),
            "--calibration-data",
            str(world["calib"]),
            "--quiet",
            *extra,
        ]
    )


def test_edited_copies_find_their_source_first_and_are_flagged(world, tmp_path, capsys):
    index = tmp_path / "index"
    assert _build(world, index) == 0
    built = SearchIndex.open(index)
    assert len(built) == 24
    cal = built.meta["calibration"]
    assert cal["method"] == "validation" and cal["n_queries"] == 24 and cal["n_gt_pairs"] == 12
    assert cal["precision"] >= 0.9 and cal["threshold"] is not None
    capsys.readouterr()
    out_csv, out_json = tmp_path / "m.csv", tmp_path / "m.json"
    assert (
        main(
            [
                "query",
                str(index),
                str(world["queries"]),
                "--top-k",
                "3",
                "--csv",
                str(out_csv),
                "--json",
                str(out_json),
                "--quiet",
            ]
        )
        == 0
    )
    printed = capsys.readouterr()
    assert printed.out == ""  # --quiet: no table, no progress; the summary names the files (absolute)
    assert f"csv          {out_csv.absolute()}" in printed.err and "6 queries with a copy" in printed.err
    results = json.loads(out_json.read_text())["results"]
    assert len(results) == 6
    for res in results:
        source = Path(res["query"]).stem.removeprefix("copy_of_")
        best = res["matches"][0]
        assert Path(best["path"]).stem == source, res
        assert best["copy"] and best["score"] >= cal["threshold"]
        assert [m["rank"] for m in res["matches"]] == [1, 2, 3]
        assert all(a["score"] >= b["score"] for a, b in zip(res["matches"], res["matches"][1:]))
    assert main(["query", str(index), str(world["queries"]), "--top-k", "1"]) == 0  # not quiet: the table
    table = capsys.readouterr().out
    assert all(f"COPY  {res['matches'][0]['path']}" in table for res in results)
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 18 and rows[0].keys() == {"query", "rank", "match", "score", "copy"}
    assert sum(int(r["copy"]) for r in rows) == sum(m["copy"] for res in results for m in res["matches"])
    for res in results:  # the score is the cosine similarity of the checkpoint model's descriptors
        q = built.index.reconstruct(built.id_of(res["matches"][0]["path"]))
        assert np.isclose(np.linalg.norm(q), 1.0, atol=1e-5)


def test_threshold_is_where_validation_precision_first_drops_below_target(world, tmp_path):
    """The stored threshold, precision and recall equal a naive float64 recomputation from the validation pairs."""
    index = tmp_path / "index"
    assert _build(world, index) == 0
    cal = SearchIndex.open(index).meta["calibration"]
    calib_index = tmp_path / "calib_refs"  # the validation references, searched by the validation queries
    assert (
        main(
            [
                "build",
                str(calib_index),
                str(world["calib"] / "reference"),
                "--checkpoint",
                str(world["ckpt"]),
                "--threshold",
                "0.5",
                "--quiet",
            ]
        )
        == 0
    )
    out = tmp_path / "calib.json"
    assert (
        main(["query", str(calib_index), str(world["calib"] / "query"), "--top-k", "10", "--json", str(out), "--quiet"])
        == 0
    )
    pairs = [
        (Path(r["query"]).stem, Path(m["path"]).stem, float(m["score"]))
        for r in json.loads(out.read_text())["results"]
        for m in r["matches"]
    ]
    truth = {f"Q{i:05d}": f"R{i:06d}" for i in range(12)}
    pairs.sort(key=lambda p: (-p[2], truth.get(p[0]) == p[1]))  # pessimistic: non-matches first at equal score
    best = None
    tp = 0
    for rank, (q, r, s) in enumerate(pairs, start=1):
        tp += truth.get(q) == r
        if tp / rank >= 0.9 and (best is None or tp / 12 > best[2]):
            best = (s, tp / rank, tp / 12)
    assert cal["threshold"] == pytest.approx(best[0], abs=1e-5)
    assert cal["precision"] == pytest.approx(best[1]) and cal["recall"] == pytest.approx(best[2])


def test_calibrates_on_the_validation_data_recorded_in_the_checkpoint(world, tmp_path, capsys):
    """Without --calibration-data the threshold comes from the checkpoint's own dataset (its validation queries and
    references); when precision never reaches the target there is no threshold, and nothing is flagged."""
    index = tmp_path / "index"
    assert main(["build", str(index), str(world["photos"]), "--checkpoint", str(world["own"]), "--quiet"]) == 0
    cal = SearchIndex.open(index).meta["calibration"]
    assert cal["data"] == str(world["mini"]) and (cal["n_queries"], cal["n_references"]) == (16, 24)
    assert cal["n_gt_pairs"] == round(16 * SMOKE.dataset.build.get("match_fraction", 0.35))
    assert cal["threshold"] is None or cal["precision"] >= 0.9
    wrong = tmp_path / "wrong_gt"  # every copy paired with another photo's reference: precision stays < 0.9
    shutil.copytree(world["calib"], wrong)
    rows = "".join(f"Q{i:05d},R{(i + 1) % 12:06d}\n" if i < 12 else f"Q{i:05d},\n" for i in range(24))
    (wrong / "ground_truth.csv").write_text("query_id,reference_id\n" + rows)
    unflagged = tmp_path / "unflagged"
    capsys.readouterr()
    assert (
        main(
            [
                "build",
                str(unflagged),
                str(world["photos"]),
                "--checkpoint",
                str(world["ckpt"]),
                "--calibration-data",
                str(wrong),
                "--quiet",
            ]
        )
        == 0
    )
    assert "precision never reaches 0.9" in capsys.readouterr().err
    assert SearchIndex.open(unflagged).threshold is None
    assert main(["query", str(unflagged), str(world["queries"]), "--json", str(tmp_path / "q.json"), "--quiet"]) == 0
    out = json.loads((tmp_path / "q.json").read_text())
    assert out["threshold"] is None and len(out["results"]) == 6
    assert not any(m["copy"] for r in out["results"] for m in r["matches"])
    assert "copy threshold none (nothing flagged)" in capsys.readouterr().err


def test_threshold_at_precision_matches_the_official_p90_operating_point():
    rng = np.random.default_rng(1)
    queries = [f"Q{i:05d}" for i in range(40)]
    gt = GroundTruth.from_pairs(queries, {q: f"R{i:06d}" for i, q in enumerate(queries[:20])})
    rows = [(q, f"R{rng.integers(0, 30):06d}", float(rng.random())) for q in queries for _ in range(3)]
    rows += [(q, f"R{i:06d}", float(rng.random() * 2)) for i, q in enumerate(queries[:20])]
    preds = Predictions.from_rows(list({(q, r): (q, r, s) for q, r, s in rows}.values()))
    official = evaluate(gt, preds)
    t, p, r = threshold_at_precision(gt, preds, 0.9)
    assert (t, r) == (official.threshold_at_p90, official.recall_at_p90) and p >= 0.9
    assert threshold_at_precision(gt, preds, 1.0)[1] == 1.0
    bad = Predictions.from_rows([(q, "R999999", 1.0) for q in queries])
    assert threshold_at_precision(gt, bad, 0.9) is None
    with pytest.raises(ValueError, match="target precision"):
        threshold_at_precision(gt, preds, 0.0)


def test_incremental_add_keeps_old_vectors_and_skips_duplicates(world, tmp_path, capsys):
    photos = tmp_path / "photos"
    shutil.copytree(world["photos"], photos)
    later = sorted(photos.iterdir())[16:]
    extra = tmp_path / "later"
    extra.mkdir()
    for p in later:
        p.rename(extra / p.name)
    index = tmp_path / "index"
    assert (
        main(["build", str(index), str(photos), "--checkpoint", str(world["ckpt"]), "--threshold", "0.9", "--quiet"])
        == 0
    )
    before = SearchIndex.open(index)
    old = {before.path_of(i): before.index.reconstruct(i) for i in before.rows}
    assert len(old) == 16
    capsys.readouterr()
    assert main(["add", str(index), str(photos), str(extra), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "16 → 24 images" in out and "indexed 8 new and 0 modified" in out and "skipped 16 already indexed" in out
    after = SearchIndex.open(index)
    assert len(after) == 24 and after.index.ntotal == 24
    for path, vector in old.items():  # bit-identical: not embedded again
        assert np.array_equal(after.index.reconstruct(after.id_of(path)), vector)
    assert sorted(after.rows) == list(range(24))
    # a modified file is embedded again, its old vector replaced
    target = Path(sorted(old)[0])
    _edit(load_image(target), ("overlay_text",), 7).save(target, format="PNG")
    capsys.readouterr()
    assert main(["add", str(index), str(photos), "--quiet"]) == 0
    assert "indexed 0 new and 1 modified" in capsys.readouterr().out
    final = SearchIndex.open(index)
    assert len(final) == 24 and final.index.ntotal == 24
    assert not np.array_equal(final.index.reconstruct(final.id_of(target)), old[str(target)])
    # the new images are found: each added photo is its own best match
    assert main(["query", str(index), str(extra), "--top-k", "1", "--json", str(tmp_path / "q.json"), "--quiet"]) == 0
    for res in json.loads((tmp_path / "q.json").read_text())["results"]:
        assert res["matches"][0]["path"] == res["query"] and res["matches"][0]["score"] == pytest.approx(1.0, abs=1e-5)
        assert res["matches"][0]["copy"]


def test_unreadable_images_are_counted_and_reported(world, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted(world["photos"].iterdir())[:3]:
        shutil.copy(p, photos / p.name)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (photos / "empty.png").write_bytes(b"")
    (photos / "notes.txt").write_text("not an image")
    index = tmp_path / "index"
    assert (
        main(["build", str(index), str(photos), "--checkpoint", str(world["ckpt"]), "--threshold", "0.9", "--quiet"])
        == 0
    )
    captured = capsys.readouterr()
    assert "indexed 3 new" in captured.out and "2 unreadable" in captured.out
    assert "1 files without an image suffix" in captured.out
    assert f"unreadable image {photos / 'broken.jpg'}: file is truncated" in captured.err
    assert f"unreadable image {photos / 'empty.png'}: file is empty" in captured.err
    assert len(SearchIndex.open(index)) == 3
    assert (
        main(
            [
                "query",
                str(index),
                str(photos / "broken.jpg"),
                str(sorted(photos.glob("photo_*"))[0]),
                "--json",
                str(tmp_path / "q.json"),
                "--quiet",
            ]
        )
        == 0
    )
    q = json.loads((tmp_path / "q.json").read_text())
    assert len(q["results"]) == 1 and q["unreadable"][0]["path"] == str(photos / "broken.jpg")
    assert "unreadable query" in capsys.readouterr().err


def test_refuses_to_overwrite_an_index_or_a_foreign_folder(world, tmp_path, capsys):
    index = tmp_path / "index"
    args = [
        "build",
        str(index),
        str(world["photos"]),
        "--checkpoint",
        str(world["ckpt"]),
        "--threshold",
        "0.9",
        "--quiet",
    ]
    assert main(args) == 0
    stamp = (index / "index.json").read_text()
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already holds an index" in err and "--overwrite" in err and "isc-search add" in err
    assert (index / "index.json").read_text() == stamp
    assert main([*args, "--threshold", "0.5", "--overwrite"]) == 0  # the last --threshold wins
    assert SearchIndex.open(index).threshold == 0.5 and len(SearchIndex.open(index)) == 24
    capsys.readouterr()
    assert main(["info", str(index)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["images"] == 24 and info["calibration"] == {**info["calibration"], "method": "manual", "threshold": 0.5}
    assert info["model"]["size"] == 48 and info["model"]["checkpoint"] == str(world["ckpt"])
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    assert (
        main(
            [
                "build",
                str(foreign),
                str(world["photos"]),
                "--checkpoint",
                str(world["ckpt"]),
                "--threshold",
                "0.9",
                "--overwrite",
                "--quiet",
            ]
        )
        == 2
    )
    assert "holds no isc-search index" in capsys.readouterr().err and (foreign / "keep.txt").read_text() == "mine"


def test_errors_name_the_problem(world, tmp_path, capsys):
    assert main(["query", str(tmp_path / "nothing"), str(world["queries"])]) == 2
    assert "holds no isc-search index" in capsys.readouterr().err
    index = tmp_path / "index"  # the random checkpoint records no dataset: calibration needs --calibration-data
    assert main(["build", str(index), str(world["photos"]), "--checkpoint", str(world["ckpt"]), "--quiet"]) == 2
    assert "records no dataset" in capsys.readouterr().err
    assert (
        main(
            [
                "build",
                str(index),
                str(world["photos"]),
                "--checkpoint",
                str(world["ckpt"]),
                "--calibration-data",
                str(world["photos"]),
                "--quiet",
            ]
        )
        == 2
    )
    assert "not a DISC-layout dataset" in capsys.readouterr().err
    assert (
        main(
            [
                "build",
                str(index),
                str(world["photos"]),
                "--checkpoint",
                str(world["ckpt"]),
                "--threshold",
                "0.9",
                "--quiet",
            ]
        )
        == 0
    )
    other = tmp_path / "other.ckpt"
    torch.manual_seed(1)
    model = DescriptorModel(**MODEL_ARGS)
    torch.save(
        {
            "hyper_parameters": {"model": MODEL_ARGS, "config": {"data": {"eval_size": 48}}},
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        },
        other,
    )
    assert main(["query", str(index), str(world["queries"]), "--checkpoint", str(other), "--quiet"]) == 2
    assert "does not embed like the index" in capsys.readouterr().err
    assert main(["query", str(index), str(tmp_path / "missing.jpg"), "--quiet"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["query", str(index), str(world["queries"]), "--threads", "0", "--quiet"]) == 2
    assert "--threads must be auto or a positive integer" in capsys.readouterr().err
    meta = json.loads((index / "index.json").read_text())
    del meta["calibration"]
    (index / "index.json").write_text(json.dumps(meta))
    assert main(["query", str(index), str(world["queries"]), "--quiet"]) == 2
    assert "index.json lacks calibration.threshold" in capsys.readouterr().err
