"""Embedded mini-DISC builder: layout, ground truth, edits, determinism, atomicity and the CLI."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from isc_research.cli.make_dataset import main as make_dataset
from isc_research.data import mini_disc as md
from isc_research.augment.edits import EDIT_NAMES, EDITS, EditContext, make_query
from isc_research.data.mini_disc import (
    MiniDiscError,
    MiniDiscSpec,
    SourcePool,
    base_image,
    build_mini_disc,
    embedded_source_images,
    ensure_mini_disc,
    read_manifest,
)

TINY = MiniDiscSpec(n_references=12, n_training=20, n_queries=10, image_size=96)
# more queries (and a different match fraction) to exercise many edits and boxes
WIDE = MiniDiscSpec(n_references=30, n_training=4, n_queries=60, match_fraction=0.25, image_size=96, seed=3)
TINY_ARGS = ["--references", "12", "--training", "20", "--queries", "10", "--image-size", "96", "--quiet"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_mini_disc(tmp_path_factory.mktemp("md") / TINY.name(), TINY, workers=1, progress=False)


@pytest.fixture(scope="module")
def tiny_two_workers(tmp_path_factory) -> Path:
    return build_mini_disc(tmp_path_factory.mktemp("md2") / TINY.name(), TINY, workers=2, progress=False)


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> Path:
    return build_mini_disc(tmp_path_factory.mktemp("mdw") / "wide", WIDE, workers=2, progress=False)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


# ------------------------------------------------------------------------------------- layout and GT


def test_layout_and_naming(tiny):
    assert sorted(p.name for p in tiny.iterdir()) == [
        "ground_truth.csv",
        "manifest.json",
        "query",
        "query_edits.csv",
        "reference",
        "training",
    ]
    for sub, prefix, n, digits in (("reference", "R", 12, 6), ("training", "T", 20, 6), ("query", "Q", 10, 5)):
        names = sorted(p.name for p in (tiny / sub).iterdir())
        assert names == [f"{prefix}{i:0{digits}d}.jpg" for i in range(n)]
    for p in [*(tiny / "reference").iterdir(), *(tiny / "training").iterdir()]:
        with Image.open(p) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and max(im.size) == 96 and min(im.size) >= 50
    for p in (tiny / "query").iterdir():
        with Image.open(p) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and min(im.size) >= 8 and max(im.size) <= 144


def test_ground_truth(tiny):
    text = (tiny / "ground_truth.csv").read_text()
    assert text.splitlines()[0] == "query_id,reference_id"
    rows = _rows(tiny / "ground_truth.csv")
    assert [r["query_id"] for r in rows] == [f"Q{i:05d}" for i in range(10)]
    matched = [r for r in rows if r["reference_id"]]
    assert len(matched) == TINY.n_matched == 4
    refs = {p.stem for p in (tiny / "reference").iterdir()}
    assert all(r["reference_id"] in refs for r in matched)
    assert len({r["reference_id"] for r in matched}) == len(matched)  # at most one query per reference
    for r in rows:
        if not r["reference_id"]:
            assert f"\n{r['query_id']},\n" in text  # DISC21 style: empty reference field
    assert [r["query_id"] for r in matched] != [f"Q{i:05d}" for i in range(4)]  # shuffled, interleaved


def test_match_fraction(wide):
    rows = _rows(wide / "ground_truth.csv")
    frac = sum(bool(r["reference_id"]) for r in rows) / len(rows)
    assert abs(frac - WIDE.match_fraction) <= 1 / len(rows)
    assert read_manifest(wide)["counts"] == {
        "references": 30,
        "training": 4,
        "queries": 60,
        "matched_queries": 15,
        "distractor_queries": 45,
    }


def test_query_edits_csv(wide):
    edits = _rows(wide / "query_edits.csv")
    gt = {r["query_id"]: r["reference_id"] for r in _rows(wide / "ground_truth.csv")}
    assert list(edits[0]) == ["query_id", "source", "edits", "overlay_box"]
    assert [r["query_id"] for r in edits] == sorted(gt)
    distractors = []
    n_boxes = 0
    for r in edits:
        if gt[r["query_id"]]:
            assert r["source"] == gt[r["query_id"]]
        else:
            assert r["source"].startswith("distractor:")
            distractors.append(int(r["source"].split(":")[1]))
        names = r["edits"].split("|")
        assert 1 <= len(names) <= 3 and set(names) <= set(EDIT_NAMES) and len(set(names)) == len(names)
        composited = {"overlay_onto_background", "screenshot"} & set(names)
        assert bool(r["overlay_box"]) == bool(composited)
        if r["overlay_box"]:
            n_boxes += 1
            x0, y0, x1, y1 = map(int, r["overlay_box"].split())
            with Image.open(wide / "query" / f"{r['query_id']}.jpg") as q:
                assert 0 <= x0 < x1 <= q.width and 0 <= y0 < y1 <= q.height
                assert (x1 - x0) * (y1 - y0) < q.width * q.height  # pasted onto something bigger
    assert sorted(distractors) == list(range(45))
    assert n_boxes >= 3
    used = {n for r in edits for n in r["edits"].split("|")}
    assert len(used) >= 12  # a wide mix of edit types


def test_references_training_and_distractors_are_distinct(tiny):
    sources = SourcePool(embedded_source_images(), max(512, 3 * TINY.image_size))

    def digest(img: Image.Image) -> str:
        return hashlib.sha1(np.asarray(img).tobytes()).hexdigest()

    refs = {digest(base_image(TINY, "reference", i, sources)) for i in range(TINY.n_references)}
    assert len(refs) == TINY.n_references
    for kind, n in (("training", TINY.n_training), ("distractor", TINY.n_queries - TINY.n_matched), ("background", 8)):
        assert not refs & {digest(base_image(TINY, kind, i, sources)) for i in range(n)}, kind
    # and the files on disk: no training image decodes to the pixels of a reference image
    ref_px = {hashlib.sha1(_pixels(p).tobytes()).hexdigest() for p in (tiny / "reference").iterdir()}
    assert not ref_px & {hashlib.sha1(_pixels(p).tobytes()).hexdigest() for p in (tiny / "training").iterdir()}
    assert not {p.stem for p in (tiny / "training").iterdir()} & {p.stem for p in (tiny / "reference").iterdir()}


def test_matched_queries_resemble_their_reference(wide):
    """A query made only by photometric edits keeps the reference's geometry: it must be closer to its own
    reference than to the other references (a sanity check that the GT points at the right image)."""
    edits = _rows(wide / "query_edits.csv")
    photometric = {"blur", "jpeg", "color_jitter", "grayscale"}
    checked = 0
    refs = {p.stem: p for p in (wide / "reference").iterdir()}

    def thumb(path):
        with Image.open(path) as im:
            a = np.asarray(im.convert("L").resize((16, 16), Image.BILINEAR), np.float32).ravel()
        return (a - a.mean()) / (a.std() + 1e-6)

    ref_thumbs = {k: thumb(p) for k, p in refs.items()}
    for r in edits:
        if r["source"].startswith("R") and set(r["edits"].split("|")) <= photometric:
            q = thumb(wide / "query" / f"{r['query_id']}.jpg")
            best = max(ref_thumbs, key=lambda k: float(q @ ref_thumbs[k]))
            assert best == r["source"]
            checked += 1
    assert checked >= 1


def _overlap(a, b) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def test_source_regions_are_disjoint_and_differ_between_seeds():
    layouts = set()
    for size in ((512, 512), (741, 500), (384, 191), (300, 451)):
        for seed in range(4):
            boxes = md.source_regions(size, seed, 5)
            assert set(boxes) == {"reference", "training", "distractor"}
            for role, (x0, y0, x1, y1) in boxes.items():
                assert 0 <= x0 < x1 <= size[0] and 0 <= y0 < y1 <= size[1]
                share = (x1 - x0) * (y1 - y0) / (size[0] * size[1])
                assert dict(md.ROLE_SHARES)[role] * 0.85 <= share <= dict(md.ROLE_SHARES)[role] * 1.02, (size, role)
            roles = sorted(boxes)
            assert all(_overlap(boxes[a], boxes[b]) == 0 for i, a in enumerate(roles) for b in roles[i + 1 :])
            layouts.add(tuple(sorted(boxes.items())))
    assert len(layouts) > 4  # another seed, another split of the photos


def test_each_kind_is_cut_from_its_own_region(monkeypatch):
    sources = SourcePool(embedded_source_images(), 512)
    calls = []
    real = md._region

    def spy(pool, spec, index, role, tile=None):
        calls.append((index, role, tile))
        return real(pool, spec, index, role, tile)

    monkeypatch.setattr(md, "_region", spy)
    for kind in ("reference", "training", "distractor", "background"):
        for i in range(6):
            calls.clear()
            base_image(TINY, kind, i, sources)
            assert {role for _, role, _ in calls} == {md.ROLE_OF_KIND[kind]}, (kind, i)
            if kind == "reference":
                assert calls[0][0::2] == md._reference_cell(TINY, i, len(sources))
    # the references go round every (photo, tile) cell once before any cell gets a second one
    n_cells = len(sources) * md.REFERENCE_TILES
    assert len({md._reference_cell(TINY, i, len(sources)) for i in range(n_cells)}) == n_cells
    assert md._reference_cell(TINY, 3, len(sources)) == md._reference_cell(TINY, 3 + n_cells, len(sources))


def test_reference_tiles_are_disjoint_parts_of_the_reference_region():
    sources = SourcePool(embedded_source_images(), 512)
    for index in range(len(sources)):
        src, _ = sources.get(index)
        region = md.source_regions(src.size, TINY.seed, index)["reference"]
        area = (region[2] - region[0]) * (region[3] - region[1])
        tiles = [md._region(sources, TINY, index, "reference", t)[0] for t in range(md.REFERENCE_TILES)]
        assert sum(t.width * t.height for t in tiles) <= area
        assert all(t.width * t.height >= 0.9 * area / md.REFERENCE_TILES * (1 - md.REGION_GAP) for t in tiles)


# ------------------------------------------------------------------------------- determinism, seeds


def test_deterministic_across_worker_counts(tiny, tiny_two_workers):
    a, b = _files(tiny), _files(tiny_two_workers)
    assert a.keys() == b.keys() and len(a) == 12 + 20 + 10 + 2
    assert [k for k in a if a[k] != b[k]] == []
    ma, mb = read_manifest(tiny), read_manifest(tiny_two_workers)
    assert ma["workers"] == 1 and mb["workers"] == 2
    for key in ("spec", "counts", "edit_counts", "sources", "complete"):
        assert ma[key] == mb[key]


def test_different_seed_gives_different_images():
    other = MiniDiscSpec(**{**TINY.to_dict(), "seed": 1})
    sources = SourcePool(embedded_source_images(), 512)
    for i in range(3):
        a, b = base_image(TINY, "reference", i, sources), base_image(other, "reference", i, sources)
        assert a.size != b.size or not np.array_equal(np.asarray(a), np.asarray(b))
    assert md._plan(TINY) != md._plan(other)


# ---------------------------------------------------------------------------- spec, manifest, ensure


def test_spec_name_and_validation(tmp_path):
    assert MiniDiscSpec().name() == "r600-t1500-q400-m35-s256-seed0-v3"
    assert TINY.name() == "r12-t20-q10-m35-s96-seed0-v3"
    named = MiniDiscSpec(source_dir=str(tmp_path)).name()
    assert named.startswith("r600-t1500-q400-m35-s256-seed0-v3-src") and len(named.split("-src")[1]) == 8
    assert MiniDiscSpec(source_dir=str(tmp_path)) == MiniDiscSpec(source_dir=str(tmp_path / "." / ""))
    for bad in (
        {"match_fraction": 1.5},
        {"n_references": 2, "n_queries": 10, "match_fraction": 0.5},
        {"image_size": 8},
        {"n_queries": 0},
    ):
        with pytest.raises(ValueError):
            MiniDiscSpec(**bad)


def test_manifest(tiny):
    m = read_manifest(tiny)
    assert m["complete"] is True and m["spec"] == TINY.to_dict() and m["name"] == TINY.name()
    assert MiniDiscSpec.from_dict(m["spec"]) == TINY
    assert {"numpy", "pillow", "augly"} <= set(m["versions"])
    assert len(m["sources"]["used"]) >= 10 and m["build_seconds"] >= 0
    assert sum(m["edit_counts"].values()) == sum(len(r["edits"].split("|")) for r in _rows(tiny / "query_edits.csv"))


def test_ensure_reuses_identical_build(tiny):
    before = (tiny / "manifest.json").stat().st_mtime_ns
    assert ensure_mini_disc(tiny, TINY) == tiny
    assert (tiny / "manifest.json").stat().st_mtime_ns == before


def test_ensure_refuses_different_spec_and_keeps_folder(tiny):
    before = _files(tiny)
    with pytest.raises(MiniDiscError, match="different spec.*seed"):
        ensure_mini_disc(tiny, MiniDiscSpec(**{**TINY.to_dict(), "seed": 7}))
    assert _files(tiny) == before


def test_ensure_rejects_incomplete_or_foreign_folders(tmp_path, tiny):
    half = tmp_path / "half"
    shutil.copytree(tiny, half)
    manifest = json.loads((half / "manifest.json").read_text())
    (half / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(MiniDiscError, match="incomplete"):
        ensure_mini_disc(half, TINY)
    (half / "manifest.json").unlink()
    with pytest.raises(MiniDiscError, match="no manifest"):
        ensure_mini_disc(half, TINY)
    assert len(list((half / "reference").iterdir())) == 12  # never deleted

    damaged = tmp_path / "damaged"
    shutil.copytree(tiny, damaged)
    (damaged / "query" / "Q00003.jpg").unlink()
    with pytest.raises(MiniDiscError, match="holds 9 images"):
        ensure_mini_disc(damaged, TINY)

    with pytest.raises(MiniDiscError, match="no manifest"):
        read_manifest(tmp_path)

    older = tmp_path / "older"  # a cache of an earlier format is never taken for the current one
    shutil.copytree(tiny, older)
    (older / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    with pytest.raises(MiniDiscError, match=f"format version 1, this isc builds version {md.FORMAT_VERSION}"):
        ensure_mini_disc(older, TINY)


def test_leftover_tmp_folder_is_not_taken_for_a_build(tmp_path):
    root = tmp_path / "md"
    leftover = tmp_path / f".{root.name}.tmp-999999"
    (leftover / "reference").mkdir(parents=True)
    (leftover / "manifest.json").write_text(json.dumps({"format": md.FORMAT, "spec": TINY.to_dict(), "complete": True}))
    assert ensure_mini_disc(root, TINY, workers=1, progress=False) == root.absolute()
    assert read_manifest(root)["complete"] is True and len(list((root / "query").iterdir())) == 10
    assert (leftover / "manifest.json").exists()  # someone else's leftover: untouched
    assert set(tmp_path.iterdir()) == {root, leftover}  # and our own temporary folder is gone


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = md.base_image

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(md, "base_image", flaky)
    root = tmp_path / "md"
    with pytest.raises(RuntimeError, match="disk on fire"):
        build_mini_disc(root, TINY, workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_build_refuses_nonempty_folder_but_accepts_empty_one(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(MiniDiscError, match="not empty"):
        build_mini_disc(tmp_path / "full", TINY, workers=1, progress=False)
    with pytest.raises(MiniDiscError, match="no manifest"):
        ensure_mini_disc(tmp_path / "full", TINY)
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    small = MiniDiscSpec(n_references=3, n_training=0, n_queries=2, image_size=48)
    assert build_mini_disc(tmp_path / "empty", small, workers=1, progress=False) == (tmp_path / "empty").absolute()
    assert read_manifest(tmp_path / "empty")["counts"]["queries"] == 2


# --------------------------------------------------------------------------------------------- CLI


def test_cli_builds_then_reuses_then_refuses(tmp_path, capsys):
    out = tmp_path / "cli"
    assert make_dataset(["--out", str(out), "--workers", "1", *TINY_ARGS]) == 0
    text = capsys.readouterr().out
    assert (
        "queries 10 (4 matched, 6 distractors)" in text and str(out) in text and "isc-make-dataset finished in" in text
    )
    assert _rows(out / "ground_truth.csv")[0].keys() == {"query_id", "reference_id"}

    assert make_dataset(["--out", str(out), *TINY_ARGS]) == 0  # identical: nothing to do
    assert "already built" in capsys.readouterr().out

    assert make_dataset(["--out", str(out), *TINY_ARGS, "--seed", "5"]) == 2
    assert "different spec" in capsys.readouterr().err

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"not mine to delete")
    assert make_dataset(["--out", str(foreign), *TINY_ARGS]) == 2
    err = capsys.readouterr().err
    assert "foreign" in err and "untouched" in err
    assert (foreign / "holiday.jpg").read_bytes() == b"not mine to delete"


def test_cli_bad_arguments_exit_2(tmp_path):
    with pytest.raises(SystemExit) as info:
        make_dataset(["--out", str(tmp_path / "x"), "--match-fraction", "2"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        make_dataset(["--out", str(tmp_path / "x"), "--source", str(tmp_path / "nope")])
    assert info.value.code == 2


def test_cli_source_dir_reports_skipped_files(tmp_path, capsys):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((160, 120), Image.BICUBIC)
        img.save(photos / ("sub" if i % 2 else ".") / f"photo{i}.{'png' if i % 2 else 'jpg'}")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (photos / "readme.txt").write_text("ignored: not an image extension")
    out = tmp_path / "from-photos"
    args = [
        "--out",
        str(out),
        "--source",
        str(photos),
        "--references",
        "6",
        "--training",
        "3",
        "--queries",
        "4",
        "--image-size",
        "64",
        "--workers",
        "1",
        "--quiet",
    ]
    assert make_dataset(args) == 0
    text = capsys.readouterr().out
    assert "4 photos used" in text and "1 source files: broken.jpg" in text
    m = read_manifest(out)
    assert m["spec"]["source_dir"] == str(photos.resolve()) and "-src" in m["name"]
    assert [s["file"] for s in m["sources"]["skipped"]] == ["broken.jpg"]
    assert sorted(m["sources"]["used"]) == ["photo0.jpg", "photo2.jpg", "sub/photo1.png", "sub/photo3.png"]


def test_source_dir_with_too_few_photos(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "bad.png").write_bytes(b"")
    with pytest.raises(MiniDiscError, match="only 0 usable photos"):
        build_mini_disc(tmp_path / "out", MiniDiscSpec(source_dir=str(tmp_path / "p")), workers=1, progress=False)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------- edits


def test_embedded_sources():
    sources = embedded_source_images()
    assert len(sources) >= 10
    names = [Path(s).stem for s in sources]
    assert len(set(names)) == len(names) and not {"chessboard_GRAY", "motorcycle_right"} & set(names)
    pool = SourcePool(sources, 256)
    for i in range(len(pool)):
        img, _ = pool.get(i)
        assert img.mode == "RGB" and 64 <= min(img.size) and max(img.size) <= 256


ODD_INPUTS = {
    "tiny8": lambda: Image.new("RGB", (8, 8), (200, 30, 30)),
    "strip1x200": lambda: Image.new("RGB", (1, 200), (30, 200, 30)),
    "strip200x1": lambda: Image.new("RGB", (200, 1), (30, 30, 200)),
    "grey": lambda: Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 64), dtype=np.uint8)),
    "rgba": lambda: Image.new("RGBA", (50, 30), (0, 0, 255, 100)),
}


@pytest.mark.parametrize("kind", sorted(ODD_INPUTS))
@pytest.mark.parametrize("name", EDIT_NAMES)
def test_each_edit_handles_odd_inputs(name, kind):
    for seed in range(2):
        out = EDITS[name](ODD_INPUTS[kind](), np.random.default_rng(seed), EditContext())
        assert isinstance(out, Image.Image) and out.mode == "RGB"
        assert 8 <= min(out.size) and max(out.size) <= 2048


def test_edits_change_the_image():
    base = base_image(TINY, "reference", 0, SourcePool(embedded_source_images(), 512))
    for name in EDIT_NAMES:
        out = EDITS[name](base, np.random.default_rng(0), EditContext())
        assert out.size != base.size or not np.array_equal(np.asarray(out), np.asarray(base)), name


@pytest.mark.parametrize("name", ["overlay_onto_background", "screenshot"])
def test_overlay_box_is_exact(name):
    red = Image.new("RGB", (90, 60), (255, 0, 0))
    black = lambda j: Image.new("RGB", (200, 150), (0, 0, 0))  # noqa: E731
    for seed in range(6):
        ctx = EditContext(other=black)
        out = np.asarray(EDITS[name](red, np.random.default_rng(seed), ctx)).astype(int)
        x0, y0, x1, y1 = ctx.box
        inside = out[y0:y1, x0:x1]
        assert (inside[..., 0] > 200).all() and (inside[..., 1:] < 50).all(), (seed, ctx.box)
        is_red = (out[..., 0] > 200) & (out[..., 1] < 50) & (out[..., 2] < 50)
        assert is_red.sum() == (x1 - x0) * (y1 - y0)  # nothing red outside the box
        if name == "overlay_onto_background":
            assert out.shape[:2] == (150, 200)
            assert 0.3 <= max((x1 - x0) / 200, (y1 - y0) / 150) <= 0.81


def test_make_query_box_follows_final_resize():
    red = Image.new("RGB", (256, 200), (255, 0, 0))
    other = lambda j: Image.new("RGB", (1000, 800), (0, 0, 0))  # noqa: E731 - forces a downscale
    found = 0
    for seed in range(60):
        q, names, box = make_query(red, np.random.default_rng(seed), other, max_side=384)
        assert 1 <= len(names) <= 3 and max(q.size) <= 384
        if box is None or not {"overlay_onto_background"} & set(names) or len(names) > 1:
            continue
        x0, y0, x1, y1 = box
        a = np.asarray(q).astype(int)
        assert (a[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1, 0] > 180).all()  # interior red (resampling blurs edges)
        assert (a[:, : max(0, x0 - 1), 0] < 60).all() and (a[: max(0, y0 - 1), :, 0] < 60).all()
        found += 1
    assert found >= 1
