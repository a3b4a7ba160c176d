"""Embedded mini-DISC: a small DISC21-shaped dataset built from photos shipped inside installed packages.

Layout (identical to DISC21, see RECIPES.md §1.1-1.2)::

    root/reference/R000000.jpg ...   root/training/T000000.jpg ...   root/query/Q00000.jpg ...
    root/ground_truth.csv            query_id,reference_id (empty reference for distractors)
    root/query_edits.csv             query_id,source,edits,overlay_box
    root/manifest.json               spec, counts, versions, build time, "complete": true

Every image is generated from its own ``np.random.default_rng([seed, kind, index])``, so a build is
deterministic for a spec whatever the number of worker processes.  Builds go to a hidden temporary
sibling folder that is renamed into place once the manifest is written.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import json
import logging
import math
import multiprocessing
import os
import platform
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from isc_research.assets import colour, emoji_files, emoji_image, latin_fonts, load_font, package_dir, pick, words
from isc_research.augment.edits import make_query
from isc_research.images import IMAGE_SUFFIXES, ImageLoadError, fit_long_side, load_image, scan_files, warn_unused

__all__ = [
    "MiniDiscError",
    "MiniDiscSpec",
    "SourcePool",
    "base_image",
    "build_mini_disc",
    "collect_sources",
    "embedded_source_images",
    "ensure_mini_disc",
    "read_manifest",
]

log = logging.getLogger(__name__)

SourceEntry = Path | Callable[[], Image.Image]

FORMAT = "isc-mini-disc"
# 2: references, training images and distractors/backgrounds are cut from disjoint regions of each photo
#    (`source_regions`), so that images of different identity share fewer real pixels; the folder name carries it.
# 3: the query edits call the recipe policies' ops (isc_research.augment.ops: one implementation of each), so their
#    pixels changed (rotation, perspective, colour jitter, text, emoji, blur...).
FORMAT_VERSION = 3
KINDS = {"plan": 0, "reference": 1, "training": 2, "distractor": 3, "background": 4, "query": 5}
JPEG_QUALITY = 90
MIN_SOURCE_SIDE = 64
MIN_EMBEDDED_SOURCES = 10
MIN_USER_SOURCES = 3
# Embedded files that pass the generic checks but make poor or duplicate photos.
_EMBEDDED_EXCLUDE = {
    "motorcycle_right": "stereo twin of motorcycle_left (near-duplicate)",
    "horse": "binary silhouette",
    "logo2": "mostly blank logo",
    "microaneurysms": "tiny, nearly uniform medical crop",
    "Minduka_Present_Blue_Pack": "128-px clip art whose crops all look alike",
}


class MiniDiscError(RuntimeError):
    """A mini-DISC folder cannot be built or used as asked (the message says why and what to do)."""


@dataclass(frozen=True)
class MiniDiscSpec:
    """What to build; equal specs give identical datasets (for the same library versions)."""

    n_references: int = 600
    n_training: int = 1500
    n_queries: int = 400
    match_fraction: float = 0.35
    image_size: int = 256
    seed: int = 0
    source_dir: str | None = None

    def __post_init__(self) -> None:
        if min(self.n_references, self.n_queries) < 1 or self.n_training < 0:
            raise ValueError("need n_references >= 1, n_queries >= 1 and n_training >= 0")
        if not 0.0 <= self.match_fraction <= 1.0:
            raise ValueError(f"match_fraction must be in [0, 1], got {self.match_fraction}")
        if self.n_matched > self.n_references:
            raise ValueError(
                f"{self.n_matched} matched queries need as many distinct references, only {self.n_references}"
            )
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {self.image_size}")
        if self.source_dir is not None:  # normalise so that equal folders compare equal
            object.__setattr__(self, "source_dir", str(Path(self.source_dir).expanduser().resolve()))

    @property
    def n_matched(self) -> int:
        return round(self.n_queries * self.match_fraction)

    def name(self) -> str:
        """Short folder name encoding the spec and the format version, e.g. ``r600-t1500-q400-m35-s256-seed0-v3``
        (a new format builds into a new folder: a cache of an older one is never taken for it)."""
        base = (
            f"r{self.n_references}-t{self.n_training}-q{self.n_queries}"
            f"-m{self.match_fraction * 100:g}-s{self.image_size}-seed{self.seed}-v{FORMAT_VERSION}"
        )
        if self.source_dir is None:
            return base
        return f"{base}-src{hashlib.sha1(self.source_dir.encode()).hexdigest()[:8]}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MiniDiscSpec:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


# --------------------------------------------------------------------------------------------- sources


def _source_problem(img: Image.Image) -> str | None:
    """Why ``img`` is unusable as a source photo, or None."""
    if min(img.size) < MIN_SOURCE_SIDE:
        return f"too small ({img.width}x{img.height} < {MIN_SOURCE_SIDE} px)"
    grey = np.asarray(img.convert("L"))
    if len(np.unique(grey)) < 32:
        return "degenerate (fewer than 32 grey levels)"
    if grey.std() < 8:
        return "nearly uniform"
    return None


def _embedded_candidates() -> list[Path]:
    dirs = [
        package_dir("skimage", "data"),
        package_dir("sklearn", "datasets", "images"),
        package_dir("matplotlib", "mpl-data", "sample_data"),
    ]
    return [
        p
        for d in dirs
        if d is not None and d.is_dir()
        for p in sorted(d.rglob("*"))
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    ]


@lru_cache(maxsize=1)
def _embedded_scan() -> tuple[tuple[Path, ...], tuple[tuple[str, str], ...]]:
    usable, skipped = [], []
    for p in _embedded_candidates():
        reason = _EMBEDDED_EXCLUDE.get(p.stem)
        if reason is None:
            try:
                reason = _source_problem(load_image(p))
            except ImageLoadError as e:
                reason = e.reason
        (skipped.append((p.name, reason)) if reason else usable.append(p))
    return tuple(usable), tuple(skipped)


def embedded_source_images() -> list[SourceEntry]:
    """Usable photos shipped inside installed packages (scikit-image, scikit-learn, matplotlib).

    All entries are currently file paths; `SourcePool` also accepts zero-argument callables that
    return a PIL image.
    """
    return list(_embedded_scan()[0])


def _scan_user_source(path: str) -> tuple[str, str | None]:
    try:
        return path, _source_problem(load_image(path, draft_size=512))
    except ImageLoadError as e:
        return path, e.reason


def collect_sources(spec: MiniDiscSpec, workers: int = 1) -> tuple[list[SourceEntry], list[tuple[str, str]]]:
    """(usable source entries, [(file, reason skipped)]) for ``spec``; raises MiniDiscError if too few."""
    if spec.source_dir is None:
        usable, skipped = embedded_source_images(), list(_embedded_scan()[1])
        if len(usable) < MIN_EMBEDDED_SOURCES:
            raise MiniDiscError(
                f"only {len(usable)} usable photos found inside scikit-image / scikit-learn / matplotlib "
                f"(need {MIN_EMBEDDED_SOURCES}); reinstall them, or pass a folder of photos (--source DIR)"
            )
        return usable, skipped
    root = Path(spec.source_dir)
    if not root.is_dir():
        raise MiniDiscError(f"source folder '{root}' does not exist or is not a folder")
    found, others, broken = scan_files(sorted(root.rglob("*")))
    warn_unused(root, others, broken, log)  # counted and named, never dropped without a word
    paths = [str(p) for p in found]
    results = _parallel_map(_scan_user_source, paths, workers)
    usable = [Path(p) for p, reason in results if reason is None]
    skipped = [(os.path.relpath(p, root), reason) for p, reason in results if reason is not None]
    if skipped:
        log.warning(
            "skipped %d of %d files in %s: %s",
            len(skipped),
            len(paths),
            root,
            "; ".join(f"{n} ({r})" for n, r in skipped[:5]) + (" ..." if len(skipped) > 5 else ""),
        )
    if len(usable) < MIN_USER_SOURCES:
        raise MiniDiscError(
            f"only {len(usable)} usable photos in '{root}' ({len(skipped)} skipped, need {MIN_USER_SOURCES}); "
            f"add photos (extensions: {', '.join(IMAGE_SUFFIXES)})"
        )
    return usable, skipped


class SourcePool:
    """Source photos loaded lazily (once per process), RGB, long side at most ``max_side``."""

    def __init__(self, entries: Sequence[SourceEntry], max_side: int) -> None:
        if not entries:
            raise MiniDiscError("no source photos")
        self.entries = list(entries)
        self.max_side = max_side
        self._cache: dict[int, tuple[Image.Image, bool]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, i: int) -> tuple[Image.Image, bool]:
        """(image, is_grey) of entry ``i``."""
        if i not in self._cache:
            e = self.entries[i]
            img = load_image(e, draft_size=self.max_side) if isinstance(e, (str, Path)) else e().convert("RGB")
            img = fit_long_side(img, self.max_side)
            a = np.asarray(img, dtype=np.int16)
            is_grey = bool(np.abs(a[..., 0] - a[..., 1]).max() <= 2 and np.abs(a[..., 1] - a[..., 2]).max() <= 2)
            self._cache[i] = (img, is_grey)
        return self._cache[i]


# ------------------------------------------------------------------------------------- base images


# Each photo is cut into disjoint regions, one per role, so that a reference never shares pixels with a training
# image, a distractor query or a query background, whatever the crops: (role, share of the photo's area).
ROLE_SHARES = (("reference", 0.4), ("training", 0.4), ("distractor", 0.2))
ROLE_OF_KIND = {
    "reference": "reference",
    "training": "training",
    "distractor": "distractor",
    "background": "distractor",
}
REGION_GAP = 0.04  # of the cut side, left out between two regions: a SIFT patch straddling the cut matches neither
REFERENCE_TILES = 2  # the reference region is cut again into this many tiles; a reference is cropped from one


def source_regions(size: tuple[int, int], seed: int, index: int) -> dict[str, tuple[int, int, int, int]]:
    """Disjoint boxes (x0, y0, x1, y1) of a ``size`` photo, one per role of ROLE_SHARES, by guillotine cuts across
    the longer side of what is left; which role comes first is drawn per (seed, photo), so another seed splits the
    photos differently."""
    rng = np.random.default_rng([seed, KINDS["plan"], 1, index])
    order = [ROLE_SHARES[int(j)] for j in rng.permutation(len(ROLE_SHARES))]
    x0, y0, x1, y1 = 0.0, 0.0, float(size[0]), float(size[1])
    boxes = {}
    for k, (role, share) in enumerate(order):
        left = sum(s for _, s in order[k:])
        if k == len(order) - 1:
            boxes[role] = (x0, y0, x1, y1)
            break
        f = share / left
        if x1 - x0 >= y1 - y0:
            cut, gap = x0 + f * (x1 - x0), REGION_GAP * (x1 - x0) / 2
            boxes[role] = (x0, y0, cut - gap, y1)
            x0 = cut + gap
        else:
            cut, gap = y0 + f * (y1 - y0), REGION_GAP * (y1 - y0) / 2
            boxes[role] = (x0, y0, x1, cut - gap)
            y0 = cut + gap
    return {role: tuple(round(v) for v in box) for role, box in boxes.items()}


def _region(
    sources: SourcePool, spec: MiniDiscSpec, index: int, role: str, tile: int | None = None
) -> tuple[Image.Image, bool]:
    """(the ``role`` region of source photo ``index``, or its ``tile``-th of REFERENCE_TILES parts, is_grey)."""
    src, grey = sources.get(index)
    x0, y0, x1, y1 = source_regions(src.size, spec.seed, index)[role]
    if tile is not None:  # equal parts across the longer side, with the gap between them
        n, wide = REFERENCE_TILES, x1 - x0 >= y1 - y0
        lo, hi = (x0, x1) if wide else (y0, y1)
        step, gap = (hi - lo) / n, REGION_GAP * (hi - lo) / 2
        a = round(lo + tile * step + (gap if tile else 0))
        b = round(lo + (tile + 1) * step - (gap if tile < n - 1 else 0))
        x0, y0, x1, y1 = (a, y0, b, y1) if wide else (x0, a, x1, b)
    return src.crop((x0, y0, x1, y1)), grey


def _reference_cell(spec: MiniDiscSpec, index: int, n_sources: int) -> tuple[int, int]:
    """(photo, tile) of reference ``index``: the references go round the photos' tiles in a per-seed order, so
    every tile holds as many references as any other (random draws would pile more onto some tiles)."""
    cells = n_sources * REFERENCE_TILES
    order = np.random.default_rng([spec.seed, KINDS["plan"], 2, cells]).permutation(cells)
    return divmod(int(order[index % cells]), REFERENCE_TILES)


def _random_shape(rng: np.random.Generator, image_size: int) -> tuple[int, int]:
    """(width, height) with the long side ``image_size`` and an aspect ratio in [0.6, 1.67]."""
    aspect = math.exp(rng.uniform(math.log(0.6), math.log(1 / 0.6)))
    short = max(16, round(image_size / max(aspect, 1 / aspect)))
    return (image_size, short) if aspect >= 1 else (short, image_size)


def _random_crop(
    src: Image.Image, rng: np.random.Generator, size: tuple[int, int], area: tuple[float, float] = (0.12, 0.85)
) -> Image.Image:
    """A crop of ``src`` with the aspect ratio of ``size`` at a random scale/position, resized to ``size``."""
    w, h = size
    a = w / h
    cw_max = min(src.width, src.height * a)
    s = math.sqrt(rng.uniform(*area))
    cw = max(4.0, cw_max * s)
    ch = min(float(src.height), cw / a)
    x0, y0 = rng.uniform(0, src.width - cw), rng.uniform(0, src.height - ch)
    return src.resize(size, Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))


def _vary_colour(img: Image.Image, rng: np.random.Generator, grey: bool) -> Image.Image:
    """Duotone for grey sources, then hue rotation, saturation and gamma changes."""
    if grey and rng.random() < 0.7:
        img = ImageOps.colorize(img.convert("L"), black=colour(rng, 0, 110), white=colour(rng, 150, 256))
    shift = int(rng.integers(256)) if rng.random() < 0.5 else int(rng.integers(-12, 13))
    sat = rng.uniform(0.6, 1.5)
    hsv = np.array(img.convert("HSV"))
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + shift) % 256
    hsv[..., 1] = np.clip(hsv[..., 1] * sat, 0, 255)
    img = Image.fromarray(hsv, "HSV").convert("RGB")
    gamma = rng.uniform(0.7, 1.4)
    return img.point([round(255 * (i / 255) ** gamma) for i in range(256)] * 3)


def _add_second_source(
    img: Image.Image, rng: np.random.Generator, sources: SourcePool, spec: MiniDiscSpec, role: str
) -> Image.Image:
    other = _region(sources, spec, int(rng.integers(len(sources))), role)[0]
    w, h = img.size
    mode = pick(rng, ("blend", "inset", "split"))
    if mode == "blend":
        return Image.blend(img, _random_crop(other, rng, img.size), float(rng.uniform(0.2, 0.45)))
    out = img.copy()
    if mode == "inset":
        iw, ih = max(8, round(w * rng.uniform(0.25, 0.5))), max(8, round(h * rng.uniform(0.25, 0.5)))
        inset = _random_crop(other, rng, (iw, ih))
        if rng.random() < 0.5:
            inset = ImageOps.expand(inset, border=int(rng.integers(2, 5)), fill=colour(rng))
        out.paste(inset, (int(rng.integers(0, w - iw + 1)), int(rng.integers(0, h - ih + 1))))
        return out
    t = rng.uniform(0.3, 0.7)
    box = (round(w * t), 0, w, h) if rng.random() < 0.5 else (0, round(h * t), w, h)
    out.paste(_random_crop(other, rng, (box[2] - box[0], box[3] - box[1])), box[:2])
    return out


def _add_shapes(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for _ in range(int(rng.integers(1, 5))):
        fill = (*colour(rng), int(rng.integers(140, 256)))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = w * rng.uniform(0.05, 0.22), h * rng.uniform(0.05, 0.22)
        kind = pick(rng, ("ellipse", "rectangle", "polygon", "line"))
        if kind == "ellipse":
            draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=fill)
        elif kind == "rectangle":
            draw.rectangle((cx - rx, cy - ry, cx + rx, cy + ry), fill=fill)
        elif kind == "polygon":
            angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 7))))
            draw.polygon([(cx + rx * np.cos(t), cy + ry * np.sin(t)) for t in angles], fill=fill)
        else:
            draw.line((cx - rx, cy - ry, cx + rx, cy + ry), fill=fill, width=max(2, round(min(w, h) * 0.03)))
    return Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")


def _add_emoji(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    files = emoji_files()
    if not files:
        return _add_shapes(img, rng)
    side = max(8, round(min(img.size) * rng.uniform(0.15, 0.35)))
    emoji = emoji_image(pick(rng, files)).resize((side, side), Image.BILINEAR)
    out = img.copy()
    out.paste(emoji, (int(rng.integers(0, img.width - side + 1)), int(rng.integers(0, img.height - side + 1))), emoji)
    return out


def _add_text(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    fonts = latin_fonts()
    font = load_font(pick(rng, fonts) if fonts else None, max(8, round(img.height * rng.uniform(0.07, 0.16))))
    out = img.copy()
    xy = (rng.uniform(0, img.width * 0.6), rng.uniform(0, img.height * 0.85))
    stroke = int(rng.integers(0, 3))
    ImageDraw.Draw(out).text(xy, words(rng), font=font, fill=colour(rng), stroke_width=stroke, stroke_fill=colour(rng))
    return out


def base_image(spec: MiniDiscSpec, kind: str, index: int, sources: SourcePool) -> Image.Image:
    """The ``index``-th distinct base image of ``kind`` (reference, training, distractor, background)."""
    rng = np.random.default_rng([spec.seed, KINDS[kind], index])
    role = ROLE_OF_KIND[kind]
    shape = _random_shape(rng, spec.image_size)
    for attempt in range(4):  # redraw crops of flat regions (sky, moon, blur), a few times at most
        if kind == "reference":  # its own cell; a flat first crop is redrawn from a random cell
            cell = _reference_cell(spec, index if attempt == 0 else int(rng.integers(1 << 30)), len(sources))
            src, grey = _region(sources, spec, *cell[:1], role, cell[1])
        else:
            src, grey = _region(sources, spec, int(rng.integers(len(sources))), role)
        img = _random_crop(src, rng, shape)
        if np.asarray(img.convert("L").reduce(4)).std() >= 14:
            break
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    img = _vary_colour(img, rng, grey)
    chosen = [
        name for name, p in (("second", 0.5), ("shapes", 0.45), ("emoji", 0.3), ("text", 0.35)) if rng.random() < p
    ] or [pick(rng, ("second", "shapes", "emoji", "text"))]
    for name in chosen:
        if name == "second":
            img = _add_second_source(img, rng, sources, spec, role)
        elif name == "shapes":
            img = _add_shapes(img, rng)
        elif name == "emoji":
            img = _add_emoji(img, rng)
        else:
            img = _add_text(img, rng)
    return img


# ------------------------------------------------------------------------------------------- build


def _id(prefix: str, i: int, n: int, width: int) -> str:
    return f"{prefix}{i:0{max(width, len(str(max(n - 1, 0))))}d}"


def _plan(spec: MiniDiscSpec) -> list[tuple[str, int]]:
    """Source of each query, in query-id order: ("reference", i) or ("distractor", k), shuffled."""
    rng = np.random.default_rng([spec.seed, KINDS["plan"]])
    refs = rng.choice(spec.n_references, size=spec.n_matched, replace=False)
    slots = [("reference", int(r)) for r in refs]
    slots += [("distractor", k) for k in range(spec.n_queries - spec.n_matched)]
    return [slots[int(j)] for j in rng.permutation(spec.n_queries)]


_WORKER: dict = {}


def _init_worker(spec: MiniDiscSpec, entries: list[SourceEntry], out: str) -> None:
    _WORKER.update(spec=spec, sources=SourcePool(entries, max(512, 3 * spec.image_size)), out=Path(out))


def _save(img: Image.Image, path: Path) -> None:
    img.save(path, "JPEG", quality=JPEG_QUALITY)


def _run_task(task: tuple) -> tuple | None:
    spec, sources, out = _WORKER["spec"], _WORKER["sources"], _WORKER["out"]
    kind, i = task[0], task[1]
    if kind == "reference":
        _save(base_image(spec, kind, i, sources), out / "reference" / f"{_id('R', i, spec.n_references, 6)}.jpg")
        return None
    if kind == "training":
        _save(base_image(spec, kind, i, sources), out / "training" / f"{_id('T', i, spec.n_training, 6)}.jpg")
        return None
    src_kind, src_index = task[2], task[3]
    base = base_image(spec, src_kind, src_index, sources)
    other = lambda j: base_image(spec, "background", 2 * i + j, sources)  # noqa: E731
    rng = np.random.default_rng([spec.seed, KINDS["query"], i])
    query, names, box = make_query(base, rng, other, max_side=round(1.5 * spec.image_size))
    qid = _id("Q", i, spec.n_queries, 5)
    _save(query, out / "query" / f"{qid}.jpg")
    source = _id("R", src_index, spec.n_references, 6) if src_kind == "reference" else f"distractor:{src_index}"
    return qid, source, "|".join(names), "" if box is None else " ".join(map(str, box))


def _parallel_map(fn: Callable, items: Sequence, workers: int, initializer=None, initargs=(), progress=None):
    """``[fn(x) for x in items]`` in a process pool (unordered completion, ordered result)."""
    if workers <= 1 or len(items) < 2:
        if initializer:
            initializer(*initargs)
        out = []
        for x in items:
            out.append(fn(x))
            if progress is not None:
                progress.update()
        return out
    chunk = max(1, min(16, len(items) // (workers * 8)))
    # spawn, not fork: forking a process whose OpenCV/torch thread pools are running can hang the children
    # (seen when the builder ran inside a test process that had already trained a model).
    with multiprocessing.get_context("spawn").Pool(workers, initializer, initargs) as pool:
        out = []
        for r in pool.imap(fn, items, chunksize=chunk):
            out.append(r)
            if progress is not None:
                progress.update()
        return out


def _versions() -> dict[str, str]:
    v = {"python": platform.python_version()}
    for dist in (
        "isc-research",
        "numpy",
        "pillow",
        "augly",
        "opencv-python-headless",
        "scikit-image",
        "scikit-learn",
        "matplotlib",
    ):
        try:
            v[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return v


def _source_label(entry: SourceEntry, spec: MiniDiscSpec) -> str:
    if not isinstance(entry, Path):
        return getattr(entry, "__qualname__", repr(entry))
    return os.path.relpath(entry, spec.source_dir) if spec.source_dir else entry.name


def _is_nonempty_dir(p: Path) -> bool:
    return p.is_dir() and any(p.iterdir())


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def build_mini_disc(
    root: str | os.PathLike, spec: MiniDiscSpec, *, workers: int | None = None, progress: bool = True
) -> Path:
    """Build the mini-DISC of ``spec`` at ``root`` (which must not exist or be empty); returns ``root``."""
    from tqdm import tqdm

    root = Path(root).absolute()
    if root.exists() and (not root.is_dir() or _is_nonempty_dir(root)):
        raise MiniDiscError(
            f"'{root}' already exists and is not empty; refusing to overwrite it. "
            "Choose another folder, or use ensure_mini_disc() to reuse an identical build."
        )
    workers = max(1, workers or os.cpu_count() or 1)
    t0 = time.perf_counter()
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    if tmp.exists():  # our own leftover (same pid): a crashed earlier attempt of this process
        shutil.rmtree(tmp)
    try:
        entries, skipped = collect_sources(spec, workers)
        for sub in ("reference", "training", "query"):
            (tmp / sub).mkdir(parents=True)
        plan = _plan(spec)
        tasks = [("query", q, k, i) for q, (k, i) in enumerate(plan)]
        tasks += [("reference", i) for i in range(spec.n_references)]
        tasks += [("training", i) for i in range(spec.n_training)]
        with tqdm(total=len(tasks), desc=f"mini-DISC {spec.name()}", unit="img", disable=not progress) as bar:
            results = _parallel_map(_run_task, tasks, workers, _init_worker, (spec, entries, str(tmp)), bar)
        _WORKER.clear()
        rows = sorted(r for r in results if r is not None)
        _write_csv(
            tmp / "ground_truth.csv",
            ("query_id", "reference_id"),
            [(q, s if s.startswith("R") else "") for q, s, _, _ in rows],
        )
        _write_csv(tmp / "query_edits.csv", ("query_id", "source", "edits", "overlay_box"), rows)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": spec.name(),
            "spec": spec.to_dict(),
            "counts": {
                "references": spec.n_references,
                "training": spec.n_training,
                "queries": spec.n_queries,
                "matched_queries": spec.n_matched,
                "distractor_queries": spec.n_queries - spec.n_matched,
            },
            "edit_counts": dict(sorted(Counter(e for r in rows for e in r[2].split("|")).items())),
            "sources": {
                "used": [_source_label(e, spec) for e in entries],
                "skipped": [{"file": n, "reason": r} for n, r in skipped],
            },
            "versions": _versions(),
            "workers": workers,
            "jpeg_quality": JPEG_QUALITY,
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "build_seconds": round(time.perf_counter() - t0, 2),
            "complete": True,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        _publish(tmp, root, spec)
    except BaseException:
        _WORKER.clear()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _publish(tmp: Path, root: Path, spec: MiniDiscSpec) -> None:
    """Rename the finished build into place; tolerate an identical build that finished first."""
    try:
        os.replace(tmp, root)  # atomic; replaces ``root`` only if it is an empty folder
    except OSError:
        if _matching_problem(root, spec) is None:
            shutil.rmtree(tmp)
            return
        raise MiniDiscError(
            f"'{root}' appeared while building and is not an identical mini-DISC; "
            f"the finished build was left in '{tmp}'"
        ) from None


def read_manifest(root: str | os.PathLike) -> dict:
    """The parsed ``manifest.json`` of a mini-DISC folder (MiniDiscError if missing or unreadable)."""
    path = Path(root) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise MiniDiscError(f"'{root}' is not a mini-DISC folder: no manifest.json") from None
    except (OSError, ValueError) as e:
        raise MiniDiscError(f"unreadable manifest '{path}': {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise MiniDiscError(f"'{path}' is not a mini-DISC manifest")
    return manifest


def _matching_problem(root: Path, spec: MiniDiscSpec) -> str | None:
    """Why ``root`` is not a complete mini-DISC of ``spec``, or None if it is one."""
    try:
        manifest = read_manifest(root)
    except MiniDiscError as e:
        return str(e)
    if manifest.get("complete") is not True:
        return f"'{root}' holds an incomplete (interrupted?) mini-DISC build"
    if manifest.get("format_version") != FORMAT_VERSION:
        return (
            f"'{root}' holds a mini-DISC of format version {manifest.get('format_version')}, this isc builds "
            f"version {FORMAT_VERSION}"
        )
    if manifest.get("spec") != spec.to_dict():
        theirs = manifest.get("spec") or {}
        diff = ", ".join(
            f"{k}: {theirs.get(k)!r} there, {v!r} asked" for k, v in spec.to_dict().items() if theirs.get(k) != v
        )
        return f"'{root}' holds a mini-DISC built with a different spec ({diff})"
    for sub, n in (("reference", spec.n_references), ("training", spec.n_training), ("query", spec.n_queries)):
        d = root / sub
        found = sum(1 for _ in d.glob("*.jpg")) if d.is_dir() else 0
        if found != n:
            return f"'{d}' holds {found} images, its manifest says {n} (files were removed or added)"
    return None


def ensure_mini_disc(
    root: str | os.PathLike, spec: MiniDiscSpec, *, workers: int | None = None, progress: bool = True
) -> Path:
    """Return ``root`` holding the mini-DISC of ``spec``, building it if ``root`` is missing or empty.

    An existing non-empty folder is never modified: it is accepted only if its manifest is complete
    and equal to ``spec``, otherwise MiniDiscError says why.
    """
    root = Path(root).absolute()
    if root.exists() and (not root.is_dir() or _is_nonempty_dir(root)):
        problem = _matching_problem(root, spec)
        if problem is not None:
            raise MiniDiscError(
                f"{problem}. It was left untouched: pass another folder (for example one named "
                f"'{spec.name()}'), or delete this one yourself to rebuild it."
            )
        return root
    return build_mini_disc(root, spec, workers=workers, progress=progress)
