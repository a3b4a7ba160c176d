"""Fault tests of issue 18 ("nothing silently wrong"): each reproduces a probe that once finished with a wrong
result or dropped data without a word, and checks that it now gives the right result or a clear error."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from isc_research.data.disc import load_disc
from isc_research.extract import EvalTransform, extract_to_hdf5, read_descriptors
from tests.test_evaluate import eval_cfg

ROOT = Path(__file__).parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class PixelExtractor:
    """A model-free extractor (fast, deterministic): the 16 × 16 thumbnail tiled to `dim` values, L2-normalised.
    `dim` large makes the HDF5 file big enough to fill a small disk."""

    def __init__(self, dim: int = 768):
        self.dim, self.calls = dim, 0
        self.transform = EvalTransform(16)

    def embed(self, views):
        self.calls += 1
        rows = torch.cat([r for r, _ in views[0]])  # the (rows, stacked uint8 views) groups of collate_views
        x = torch.cat([v for _, v in views[0]])[torch.argsort(rows)].float().flatten(1)
        x = x.repeat(1, self.dim // x.shape[1] + 1)[:, : self.dim]
        return torch.nn.functional.normalize(x, dim=1).numpy()

    def fingerprint(self):
        return {"kind": "pixels", "dim": self.dim}


def _records(data_dir, tmp_path, split="training", n=24, copy_to=None):
    records = getattr(load_disc(eval_cfg(data_dir, tmp_path).dataset), split)[:n]
    if copy_to is None:
        return records
    copy_to.mkdir(parents=True, exist_ok=True)
    for r in records:
        shutil.copy2(r.path, copy_to / r.path.name)
    return [type(r)(r.id, r.split, copy_to / r.path.name) for r in records]


# ---------------------------------------------------------------- 1. the descriptor cache cannot lie
def test_cache_is_rebuilt_when_an_image_is_replaced_in_place(tmp_path, data_dir, caplog):
    records = _records(data_dir, tmp_path, n=8, copy_to=tmp_path / "images")
    path = tmp_path / "cache.h5"
    extract_to_hdf5(PixelExtractor(), records, path, chunk_size=4)
    before = read_descriptors(path)[1]
    shutil.copyfile(records[7].path, records[2].path)  # image 2 replaced by image 7, same file name
    again = PixelExtractor()
    with caplog.at_level(logging.WARNING, logger="isc_research.extract"):
        extract_to_hdf5(again, records, path, chunk_size=4)
    assert again.calls > 0 and "image files changed" in caplog.text
    ids, after = read_descriptors(path)
    np.testing.assert_allclose(after[2], after[7], atol=1e-6)  # the new content, not the stale vector
    assert not np.allclose(before[2], after[2])


def test_cache_written_with_skipped_images_is_not_reused_in_strict_mode(tmp_path, data_dir, caplog):
    records = _records(data_dir, tmp_path, n=6, copy_to=tmp_path / "images")
    good = records[3].path.read_bytes()
    records[3].path.write_bytes(b"broken")
    path = tmp_path / "cache.h5"
    extract_to_hdf5(PixelExtractor(), records, path, chunk_size=4, skip_bad_images=True)
    assert len(read_descriptors(path)[0]) == 5
    with pytest.raises(ValueError, match=records[3].path.name):  # strict: the unreadable image is named
        extract_to_hdf5(PixelExtractor(), records, path, chunk_size=4, skip_bad_images=False)
    extract_to_hdf5(PixelExtractor(), records, path, chunk_size=4, skip_bad_images=True)
    records[3].path.write_bytes(good)  # repaired: the cache must not keep it skipped
    with caplog.at_level(logging.WARNING, logger="isc_research.extract"):
        extract_to_hdf5(PixelExtractor(), records, path, chunk_size=4, skip_bad_images=True)
    assert "extracting again" in caplog.text
    assert len(read_descriptors(path)[0]) == 6


def test_a_chunk_whose_write_was_lost_is_extracted_again(tmp_path, data_dir, caplog):
    records = _records(data_dir, tmp_path, n=12)
    path = tmp_path / "cache.h5"
    extract_to_hdf5(PixelExtractor(), records, path, chunk_size=4)
    expected = read_descriptors(path)[1]
    with h5py.File(path, "r+") as f:  # what a full disk left behind: flagged done, vectors zero
        f["vectors"][4:8] = 0
    with pytest.raises(RuntimeError, match="CRC"):
        read_descriptors(path)
    again = PixelExtractor()
    with caplog.at_level(logging.WARNING, logger="isc_research.extract"):
        extract_to_hdf5(again, records, path, chunk_size=4)
    assert "1 chunk(s) flagged done fail their CRC check" in caplog.text and again.calls == 1
    np.testing.assert_array_equal(read_descriptors(path)[1], expected)


def test_no_free_space_is_a_clear_error_and_flags_nothing(tmp_path, data_dir, monkeypatch):
    records = _records(data_dir, tmp_path, n=8)
    path = tmp_path / "cache.h5"
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1 << 20))
    with pytest.raises(OSError, match=rf"{path.name}.*disk full\?"):
        extract_to_hdf5(PixelExtractor(), records, path, chunk_size=4)
    with h5py.File(path, "r") as f:
        assert not f["chunk_done"][:].any()


FILL_DISK = """
import resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))
from isc_research.data.records import ImageRecord
from isc_research.extract import extract_to_hdf5
from tests.test_reliability import PixelExtractor
records = [ImageRecord(p.stem, "training", p) for p in sorted(Path(sys.argv[1]).glob("*.jpg"))]
extract_to_hdf5(PixelExtractor(), records, sys.argv[2], chunk_size=4)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE simulation of a full disk")
def test_a_full_disk_fails_the_run_and_the_rerun_gives_the_right_vectors(tmp_path, data_dir):
    records = _records(data_dir, tmp_path, n=24, copy_to=tmp_path / "images")  # 24 × 768 × 4 B = 72 kB > 60 kB
    path = tmp_path / "cache.h5"
    run = subprocess.run(
        [sys.executable, "-c", FILL_DISK, str(tmp_path / "images"), str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert run.returncode != 0
    assert "disk full?" in run.stderr and path.name in run.stderr
    extract_to_hdf5(PixelExtractor(), records, path, chunk_size=4)  # space freed: the same command again
    fresh = extract_to_hdf5(PixelExtractor(), records, tmp_path / "fresh.h5", chunk_size=4)
    np.testing.assert_array_equal(read_descriptors(path)[1], read_descriptors(fresh)[1])


# ---------------------------------------------------------------- 2. skipping an image cannot raise the µAP
def _disc21_copy(data_dir, tmp_path) -> tuple[Path, list[str]]:
    """A DISC21-layout copy of the tiny mini-DISC, and the overrides that point isc-eval/isc-train at it."""
    source = load_disc(eval_cfg(data_dir, tmp_path).dataset).root
    root = tmp_path / "disc"
    shutil.copytree(source, root)
    return root, [
        "dataset=disc21",
        f"dataset.root={root}",
        "dataset.query_dir=query",
        "dataset.reference_dir=reference",
        "dataset.training_dir=training",
        "dataset.ground_truth=ground_truth.csv",
    ]


def disc21_eval_cfg(out: Path, dataset: list[str], *overrides: str):
    from tests.conftest import compose_config

    return compose_config(
        "eval",
        [
            f"paths.output_dir={out}",
            "eval.num_workers=0",
            "torch_threads=1",
            "eval.report.enabled=false",
            *dataset,
            *overrides,
        ],
    )


def test_a_skipped_query_counts_as_a_miss_and_every_file_passes_isc_score(tmp_path, data_dir, capsys):
    import json

    from isc_research.cli.score import main as score_main
    from isc_research.evaluate import evaluate_checkpoint
    from isc_research.formats import read_ground_truth, read_predictions
    from isc_research.metric import evaluate

    root, dataset = _disc21_copy(data_dir, tmp_path)
    gt = read_ground_truth(root / "ground_truth.csv")
    matched = sorted(gt.matches)[0]
    (root / "query" / f"{matched}.jpg").write_bytes(b"unreadable")
    out = tmp_path / "eval"
    summary = evaluate_checkpoint(disc21_eval_cfg(out, dataset, "baseline=thumbnail", "eval.skip_bad_images=true"))
    assert summary["skipped"] == {"query": 1, "reference": 0}
    assert json.loads((out / "metrics.json").read_text())["skipped"] == {"query": 1, "reference": 0}
    # the official rule: every ground-truth pair counts, the skipped query's pair is a miss
    assert summary["uAP"] == pytest.approx(evaluate(gt, read_predictions(out / "predictions.csv")).uAP, abs=1e-12)
    capsys.readouterr()
    assert score_main(["--gt", str(root / "ground_truth.csv"), "--predictions", str(out / "predictions.csv")]) == 0
    assert json.loads(capsys.readouterr().out)["uAP"] == pytest.approx(summary["uAP"], abs=1e-9)
    assert score_main(["--gt", str(root / "ground_truth.csv"), "--descriptors", str(out / "descriptors.h5")]) == 0
    assert json.loads(capsys.readouterr().out)["uAP"] == pytest.approx(summary["uAP"], abs=1e-6)


def test_in_loop_validation_keeps_the_skipped_querys_pairs_as_misses():
    from types import SimpleNamespace

    from isc_research.callbacks import RetrievalEvaluation
    from isc_research.data.records import ImageRecord
    from isc_research.metric import GroundTruth, evaluate

    queries = [ImageRecord(f"Q{i:05d}", "query", Path(f"Q{i:05d}.jpg")) for i in range(4)]
    references = [ImageRecord(f"R{i:06d}", "reference", Path(f"R{i:06d}.jpg")) for i in range(4)]
    gt = GroundTruth.from_pairs([q.id for q in queries], {q.id: f"R{i:06d}" for i, q in enumerate(queries)})
    datamodule = SimpleNamespace(
        val_records=queries + references, data=SimpleNamespace(queries=queries, ground_truth=gt)
    )
    indices = np.array([1, 2, 3, 4, 5, 6, 7])  # query 0 unreadable, skipped
    embeddings = np.eye(8, dtype=np.float32)[[1, 2, 3, 4, 5, 6, 7]]
    embeddings[:3, 5:8] = np.eye(3)  # each seen query equals its reference
    metrics, predictions = RetrievalEvaluation().score(datamodule, indices, embeddings, skipped=1)
    assert metrics.uAP == pytest.approx(evaluate(gt, predictions).uAP) and metrics.uAP <= 0.75 + 1e-9


# ---------------------------------------------------------------- 3. run folders are never reused silently
QUICK = ("trainer.max_epochs=1", "trainer.limit_train_batches=2", "validate_before_training=false")


@pytest.mark.slow
def test_a_train_folder_is_resumed_only_by_the_same_settings(smoke_cfg):
    import json

    from isc_research.runs import RunFolderError, read_status
    from isc_research.train import train

    cfg = smoke_cfg(*QUICK)
    folder = Path(cfg.paths.output_dir)
    train(cfg)
    assert read_status(folder)["status"] == "finished"
    config = (folder / "config.yaml").read_text()
    with pytest.raises(RunFolderError, match="holds a finished isc-train run; pass overwrite=true"):
        train(smoke_cfg(*QUICK))
    with pytest.raises(RunFolderError, match="finished"):
        train(smoke_cfg(*QUICK, "optimizer.lr=0.5"))
    assert (folder / "config.yaml").read_text() == config  # nothing rewritten
    # an interrupted run: the same settings continue it (more epochs allowed), other settings are refused
    status = json.loads((folder / "run_status.json").read_text())
    (folder / "run_status.json").write_text(json.dumps({**status, "status": "interrupted"}))
    (folder / "metrics.json").unlink()
    with pytest.raises(RunFolderError, match=r"another configuration \(optimizer.lr: .* → 0.5\)"):
        train(smoke_cfg(*QUICK, "optimizer.lr=0.5"))
    metrics = train(smoke_cfg(*QUICK[1:], "trainer.max_epochs=2"))
    assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 1  # epoch 2 trained
    assert read_status(folder)["status"] == "finished" and "train/loss" in metrics
    train(smoke_cfg(*QUICK, "optimizer.lr=0.5", "overwrite=true"))  # explicit: replaced
    assert "lr: 0.5" in (folder / "config.yaml").read_text()
    # a finished run trained longer: its checkpoint continued in a new folder (what the refusal suggests)
    longer = folder.parent / "longer"
    with pytest.raises(RunFolderError, match="to train it longer, continue from its checkpoint in a new folder"):
        train(smoke_cfg(*QUICK, "optimizer.lr=0.5"))
    train(
        smoke_cfg(
            *QUICK[1:],
            "optimizer.lr=0.5",
            "trainer.max_epochs=2",
            f"paths.output_dir={longer}",
            f"ckpt_path={folder / 'checkpoints' / 'last.ckpt'}",
        )
    )
    assert torch.load(longer / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 1


def test_an_eval_folder_is_not_reused_and_overwrite_leaves_no_stale_file(tmp_path, data_dir):
    from isc_research.evaluate import evaluate_checkpoint
    from isc_research.runs import RunFolderError

    out = tmp_path / "eval"
    common = ("eval.report.enabled=false",)
    evaluate_checkpoint(eval_cfg(data_dir, out, "baseline=thumbnail", *common))
    assert (out / "descriptors.h5").is_file()
    with pytest.raises(RunFolderError, match="finished isc-eval run; pass overwrite=true"):
        evaluate_checkpoint(eval_cfg(data_dir, out, "baseline=phash", *common))
    evaluate_checkpoint(
        eval_cfg(data_dir, out, "baseline=phash", "eval.write_submissions=none", "overwrite=true", *common)
    )
    assert not (out / "descriptors.h5").exists()  # the thumbnail run's submission is gone with its metrics
    assert (out / "descriptors" / "thumbnail").is_dir()  # the cache stays: it checks itself


# ---------------------------------------------------------------- 4. exit statuses a scheduler can trust
@pytest.mark.slow
def test_sigterm_stops_isc_train_with_a_non_zero_status_and_records_it(data_dir, tmp_path):
    import json
    import signal
    import time

    run = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "isc_research.cli.train",
        "debug=smoke",
        f"paths.data_dir={data_dir}",
        f"paths.output_dir={run}",
        "trainer.max_epochs=50",
        "validate_before_training=false",
        "trainer.check_val_every_n_epoch=50",
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + 240
    while not (run / "checkpoints" / "last.ckpt").is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGTERM)
    output = process.communicate(timeout=240)[0]
    assert process.returncode == 143, output[-2000:]
    assert "stopped by SIGTERM" in output and "rerun the same command to resume" in output
    status = json.loads((run / "run_status.json").read_text())
    assert status["status"] == "interrupted" and status["reason"] == "SIGTERM"


def test_training_stops_when_no_training_image_or_too_many_are_readable(smoke_cfg, data_dir, tmp_path):
    from isc_research.train import train

    root, dataset = _disc21_copy(data_dir, tmp_path)
    images = sorted((root / "training").glob("*.jpg"))
    images[0].write_bytes(b"broken")  # 1 of 48 (2 %)
    with pytest.raises(RuntimeError, match=r"1 of 48 training images \(2.1%\).*data.max_skipped_fraction=0.01"):
        train(
            smoke_cfg(
                *dataset, *QUICK[::2], "data.max_skipped_fraction=0.01", "paths.output_dir=" + str(tmp_path / "a")
            )
        )
    for image in images:
        image.write_bytes(b"broken")
    with pytest.raises(RuntimeError, match="no training image was readable"):
        train(smoke_cfg(*dataset, *QUICK, "paths.output_dir=" + str(tmp_path / "b")))


def test_a_read_only_output_folder_is_a_clear_error(smoke_cfg, data_dir, tmp_path, monkeypatch):
    import errno
    import tempfile

    from isc_research.evaluate import evaluate_checkpoint
    from isc_research.train import train

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)  # (chmod cannot stop root, who runs CI)
    with pytest.raises(
        OSError, match=r"cannot write to the output folder .*run \(Read-only file system\).*paths.output_dir"
    ):
        train(smoke_cfg())
    with pytest.raises(OSError, match="cannot write to the output folder"):
        evaluate_checkpoint(eval_cfg(data_dir, tmp_path / "eval", "baseline=phash"))


# ---------------------------------------------------------------- 6. isc-search
@pytest.fixture
def photo_index(tmp_path, data_dir):
    """A folder of 8 photos (the smoke mini-DISC's references), a random-weight checkpoint and an index of them
    (threshold 0.9 by hand)."""
    from isc_research.cli.search import main
    from tests.test_evaluate import save_checkpoint

    photos = tmp_path / "photos"
    photos.mkdir()
    for r in _records(data_dir, tmp_path, "references", n=8):
        shutil.copy(r.path, photos / r.path.name)
    ckpt = save_checkpoint(tmp_path / "model.ckpt")
    index = tmp_path / "index"
    assert main(["build", str(index), str(photos), "--checkpoint", str(ckpt), "--threshold", "0.9", "--quiet"]) == 0
    return photos, index


def _query(index, *args) -> tuple[int, dict]:
    import json

    from isc_research.cli.search import main

    out = index.parent / "result.json"
    code = main(["query", str(index), *map(str, args), "--json", str(out), "--quiet", "--top-k", "3"])
    return code, (json.loads(out.read_text()) if code == 0 else {})


def test_search_paths_are_canonical(photo_index, monkeypatch, capsys):
    from isc_research.cli.search import main

    photos, index = photo_index
    monkeypatch.chdir(photos.parent)
    name = sorted(photos.iterdir())[0].name
    assert main(["add", str(index), f"photos/{name}", f"photos/../photos/{name}", f"./photos/{name}", "--quiet"]) == 0
    assert "8 images" in capsys.readouterr().out  # the same file under three names: no new entry
    from isc_research.index.store import SearchIndex

    assert len(SearchIndex.open(index)) == 8


def test_search_reembeds_a_changed_file_instead_of_reporting_its_stale_score(photo_index, capsys):
    photos, index = photo_index
    a, b = sorted(photos.iterdir())[:2]
    query = photos.parent / "query.jpg"
    shutil.copy(a, query)
    code, before = _query(index, query)
    assert before["results"][0]["matches"][0] == {
        "rank": 1,
        "path": str(a),
        "score": pytest.approx(1.0, abs=1e-5),
        "copy": True,
    }
    shutil.copyfile(b, a)  # the indexed file is replaced by another photo
    code, after = _query(index, query)
    assert code == 0 and "changed since they were indexed" in capsys.readouterr().err
    scores = {m["path"]: m["score"] for m in after["results"][0]["matches"]}
    assert scores.get(str(a), 0) < 0.999  # not the stale 1.0


def test_search_refuses_a_nan_threshold_or_an_edited_model_setting(photo_index, capsys):
    import json

    photos, index = photo_index
    query = sorted(photos.iterdir())[0]
    assert _query(index, query, "--threshold", "nan")[0] == 2
    assert "--threshold must be a finite number" in capsys.readouterr().err
    meta_path = index / "index.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "calibration": {**meta["calibration"], "threshold": float("nan")}}))
    assert _query(index, query)[0] == 2
    assert "index.json: calibration.threshold=nan is not a finite number" in capsys.readouterr().err
    meta_path.write_text(json.dumps({**meta, "model": {**meta["model"], "size": 64}}))
    assert _query(index, query)[0] == 2
    assert "index.json: model.size edited by hand" in capsys.readouterr().err


def test_search_does_not_flag_a_one_pixel_image_as_a_copy(photo_index, capsys):
    from PIL import Image

    photos, index = photo_index
    tiny = photos.parent / "tiny.png"
    Image.new("RGB", (1, 1), (128, 128, 128)).save(tiny)
    code, result = _query(index, tiny)
    assert code == 0 and result["results"] == []
    assert "1×1 px is too small to compare" in capsys.readouterr().err


def test_a_damaged_index_faiss_is_named(photo_index, capsys):
    photos, index = photo_index
    data = (index / "index.faiss").read_bytes()
    (index / "index.faiss").write_bytes(data[: len(data) // 2])
    assert _query(index, sorted(photos.iterdir())[0])[0] == 2
    assert "index.faiss is damaged or truncated" in capsys.readouterr().err


# ---------------------------------------------------------------- 5. one list of image types; nothing dropped silently
def test_every_reader_lists_the_same_image_types_and_names_what_it_leaves_out(tmp_path, caplog):
    from PIL import Image

    from isc_research.data.records import list_split
    from isc_research.images import IMAGE_SUFFIXES, load_image
    from isc_research.index.embed import list_images

    folder = tmp_path / "reference"
    folder.mkdir()
    pixels = Image.new("RGB", (32, 32), (10, 200, 30))
    pixels.save(folder / "R000000.jpg")
    pixels.save(folder / "R000001.gif")
    pixels.save(folder / "R000002.jfif", format="JPEG")
    (folder / "R000003.jpg").symlink_to(tmp_path / "gone.jpg")  # a broken link
    (folder / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING):
        records = list_split(tmp_path, "reference", "reference", help_text="")
    assert [r.id for r in records] == ["R000000", "R000001", "R000002"]
    assert all(load_image(r.path).size == (32, 32) for r in records)
    assert "1 files are not images of an accepted type" in caplog.text and "notes.txt" in caplog.text
    assert "1 broken links" in caplog.text and "R000003.jpg" in caplog.text
    images, ignored = list_images([folder])
    assert [p.name for p in images] == ["R000000.jpg", "R000001.gif", "R000002.jfif"]
    assert sorted(p.name for p in ignored) == ["R000003.jpg", "notes.txt"]
    from isc_research.data import mini_disc

    assert mini_disc.IMAGE_SUFFIXES is IMAGE_SUFFIXES  # isc-make-dataset --source reads the same types


# ---------------------------------------------------------------- 8. unclear errors become clear
def test_an_id_with_non_ascii_digits_is_refused_when_listed(tmp_path):
    from PIL import Image

    from isc_research.data.records import list_split

    (tmp_path / "query").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "query" / "Q０００１２.jpg")  # full-width digits
    with pytest.raises(ValueError, match="Q０００１２.jpg.*is not a DISC21 query id"):
        list_split(tmp_path, "query", "query", help_text="")


# ---------------------------------------------------------------- 7. the checkpoint selection sees the final validation
@pytest.mark.slow
def test_the_final_validation_reaches_the_best_checkpoint_selection(smoke_cfg):
    import re

    from isc_research.train import train

    cfg = smoke_cfg(
        "trainer.max_epochs=3",
        "trainer.check_val_every_n_epoch=2",
        "trainer.limit_train_batches=2",
        "validate_before_training=false",
        "callbacks.model_checkpoint.save_top_k=-1",
    )
    metrics = train(cfg)
    saved = sorted(p.name for p in (Path(cfg.paths.output_dir) / "checkpoints").glob("epoch*.ckpt"))
    assert [name[:8] for name in saved] == ["epoch001", "epoch002"]  # epoch 2 (the last) validated inside fit
    scores = [float(re.search(r"uAP([0-9.]+)\.ckpt", name).group(1)) for name in saved]
    assert metrics["best/uAP"] == pytest.approx(max(scores), abs=1e-4)
    assert metrics["val/uAP"] == pytest.approx(scores[-1], abs=1e-4)


@pytest.mark.parametrize("value", ["abc", "0"])
def test_a_bad_batch_size_is_named(smoke_cfg, value):
    from isc_research.train import train

    with pytest.raises(ValueError, match=rf"data.batch_size must be an integer >= 1, got '?{value}'?"):
        train(smoke_cfg(f"data.batch_size={value}"))


def test_a_file_that_is_not_a_checkpoint_or_a_truncated_one_is_named(smoke_cfg, tmp_path, data_dir):
    from isc_research.evaluate import evaluate_checkpoint
    from isc_research.train import resume_checkpoint, train
    from tests.test_evaluate import save_checkpoint

    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    with pytest.raises(
        ValueError, match=r"ckpt_path='.*notes.ckpt' is not a readable checkpoint: truncated or damaged"
    ):
        train(smoke_cfg(f"ckpt_path={text}"))
    with pytest.raises(ValueError, match="notes.ckpt' is not a readable checkpoint"):
        evaluate_checkpoint(eval_cfg(data_dir, tmp_path / "eval", f"ckpt_path={text}"))
    good = save_checkpoint(tmp_path / "good.ckpt")
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # killed while writing
    with pytest.raises(
        ValueError, match="last.ckpt' is not a readable checkpoint: truncated or damaged.*delete a damaged last.ckpt"
    ):
        resume_checkpoint(smoke_cfg(), tmp_path / "run")


def test_isc_score_names_a_compressed_csv_and_exits_quietly_on_a_closed_pipe(tmp_path, data_dir, capsys, monkeypatch):
    import gzip
    import io

    from isc_research.cli.score import main as score_main

    gt = load_disc(eval_cfg(data_dir, tmp_path).dataset).root / "ground_truth.csv"
    packed = tmp_path / "gt.csv.gz"
    packed.write_bytes(gzip.compress(gt.read_bytes()))
    assert score_main(["--gt", str(packed), "--predictions", str(packed)]) == 2
    err = capsys.readouterr().err
    assert "gt.csv.gz" in err and "compressed (gzip)" in err and "gunzip -k gt.csv.gz" in err
    predictions = tmp_path / "p.csv"
    predictions.write_text("query_id,reference_id,score\n")

    class ClosedPipe(io.StringIO):  # `isc-score ... | head -1` once head has exited
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert score_main(["--gt", str(gt), "--predictions", str(predictions)]) == 141
    assert capsys.readouterr().err == ""


def test_sigterm_during_an_isc_eval_run_exits_143_and_records_interrupted(tmp_path):
    import signal

    from omegaconf import OmegaConf

    from isc_research.runs import Stopped, read_status, recorded_run

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped) as stop:
        with recorded_run(tmp_path, OmegaConf.create({"seed": 0}), sigterm=True):
            assert read_status(tmp_path)["status"] == "running"
            os.kill(os.getpid(), signal.SIGTERM)
    assert stop.value.code == 143
    status = read_status(tmp_path)
    assert status["status"] == "interrupted" and status["reason"] == "SIGTERM" and status["settings"] == {"seed": 0}
    assert signal.getsignal(signal.SIGTERM) == before  # the previous handler is back
    with pytest.raises(ValueError, match="division"):
        with recorded_run(tmp_path, OmegaConf.create({"seed": 0})):
            raise ValueError("division by zero somewhere")
    assert read_status(tmp_path)["status"] == "failed" and "division" in read_status(tmp_path)["error"]


def test_an_unfinished_eval_of_another_checkpoint_leaves_no_stale_file(tmp_path, caplog):
    from omegaconf import OmegaConf

    from isc_research.runs import claim_eval_folder
    from isc_research.runs import write_status

    def cfg(ckpt):
        return OmegaConf.create({"ckpt_path": ckpt, "eval": {"size": 48}, "overwrite": False})

    write_status(tmp_path, "interrupted", cfg("a.ckpt"))
    (tmp_path / "descriptors.h5").write_bytes(b"model a's submission")
    (tmp_path / "descriptors").mkdir()
    claim_eval_folder(cfg("a.ckpt"), tmp_path)  # the same command: continues, nothing removed
    assert (tmp_path / "descriptors.h5").is_file()
    with caplog.at_level(logging.WARNING, logger="isc_research.runs"):
        claim_eval_folder(cfg("b.ckpt"), tmp_path)
    assert "ckpt_path: 'a.ckpt' → 'b.ckpt'" in caplog.text
    assert not (tmp_path / "descriptors.h5").exists() and (tmp_path / "descriptors").is_dir()
