"""Streaming, resumable descriptor extraction to HDF5, and the evaluation-time image transforms.

`extract_to_hdf5` runs an extractor over image records batch by batch and writes the descriptors to an
HDF5 file chunk by chunk (`chunk_size` images; never all images, nor all descriptors of a split, in memory
during extraction). Every finished chunk is flagged in the file after its vectors are flushed, with the CRC-32
of its vectors; a rerun with the same extractor and records skips the flagged chunks whose CRC still matches,
so an interrupted extraction resumes where it stopped. The cache cannot lie: its key (`_fingerprint`) covers
the model, transform, ids, each image file's size and modification time, and the skip policy
(`skip_bad_images`); a file made for another key is rebuilt, and a flagged chunk whose data do not match its
CRC (a write lost to a full disk) is extracted again, each with a warning saying why. A write error (full
disk, read-only folder) stops the run with an error naming the file. Why size and mtime rather than a hash of
the contents: scripts/bench/cache_key.py on the mini-DISC's 2,500 JPEGs (13 kB each, page cache warm, shared
2-core machine): a stat 6 µs per file, a SHA-1 of the bytes 34 µs, decoding 632 µs; the hash grows with the
file size (DISC21's images are ~10× larger) and rereads every byte from a cold disk, the stat does not.

File layout: ``ids`` (n, bytes), ``vectors`` (n, d) float32, ``valid`` (n,) bool (False: image unreadable and
skipped), ``chunk_done`` (n_chunks,) bool, ``chunk_crc`` (n_chunks,) uint32; attribute ``fingerprint`` (JSON).

Eval transforms (`EvalTransform`): square resize (lyakaap, RECIPES §2.4) or keep-aspect-ratio resize of the
short side (SSCD, §8), at one or several scales of `size` (lyakaap's TTA 1, 1/√2, √2; VisionForce's
200/256/320/400 ≈ 256 × 0.78/1/1.25/1.56, §4); with `flip`, each scale is also embedded mirrored. The
descriptors of all views are summed and L2-normalised.

`build_extractors`: the extractors of an `eval` config (isc-eval, isc-match): one per checkpoint, or a baseline.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing as mp
import os
import shutil
import zlib
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, ListConfig
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2 as T
from tqdm import tqdm

from isc_research.augment.policies import ToNormalisedTensor
from isc_research.checkpoints import load_checkpoint
from isc_research.data.datasets import EvalImages, ImageSizes
from isc_research.data.records import ImageRecord
from isc_research.images import draft_floor, to_rgb
from isc_research.scaling import resolve_device

log = logging.getLogger(__name__)

__all__ = [
    "EvalTransform",
    "ModelExtractor",
    "aspect_buckets",
    "extract_to_hdf5",
    "plan_batches",
    "read_descriptors",
    "view_shapes",
]

RESIZE_MODES = ("square", "keep_aspect")


# torchvision's resize filters: bilinear (isc's default, torchvision's) | bicubic (imgFp's EsViT eval, RECIPES §7)
INTERPOLATIONS = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}


class EvalTransform:
    """PIL image → one uint8 tensor (3, h, w) per scale; `ModelExtractor` normalises the batch on its device
    (4× less to pass between processes and to copy to the GPU than float32, and no per-image float pass).

    keep_aspect: the short side becomes the scale's side and the long side keeps the aspect ratio (SSCD's
    protocol, RECIPES §8: every image its own shape). With `aspect_step` (e.g. 0.125) extraction runs full
    batches instead: `aspect_buckets` sorts a split's images by aspect ratio into runs of whole batches, one
    shape per run (its median ratio), adjacent runs sharing a shape while their ratios (long / short) lie within
    `aspect_step`; each image is resized to its run's shape (`__call__(image, aspect=...)`), a small stretch of
    the long side (the descriptor moves a little: scripts/bench/keep_aspect.py measures by how much).
    """

    def __init__(
        self,
        size: int,
        resize: str = "square",
        scales: Sequence[float] = (1.0,),
        interpolation: str = "bilinear",
        aspect_step: float | None = None,
    ) -> None:
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"eval.interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}")
        if resize not in RESIZE_MODES:
            raise ValueError(f"eval.resize must be one of {RESIZE_MODES}, got {resize!r}")
        if not size or int(size) < 8:
            raise ValueError(f"eval.size must be an integer >= 8, got {size!r}")
        scales = [float(s) for s in scales]
        if not scales or min(scales) <= 0:
            raise ValueError(f"eval.tta.scales must be a non-empty list of positive factors, got {scales}")
        if aspect_step is not None and not 0 < float(aspect_step) <= 1:
            raise ValueError(
                f"eval.aspect_step must be null (exact aspect) or a fraction in (0, 1], got {aspect_step!r}"
            )
        self.size, self.resize, self.scales, self.interpolation = int(size), resize, scales, interpolation
        self.aspect_step = None if aspect_step is None or resize == "square" else float(aspect_step)
        self.sides = [max(8, round(self.size * s)) for s in scales]

    def shapes(self, width: int, height: int, aspect: float | None = None) -> list[tuple[int, int]]:
        """(h, w) of each scale's view of a width × height image; keep_aspect with `aspect` (a width / height
        from `aspect_buckets`): the view has that aspect ratio instead of the image's own."""
        out = []
        for side in self.sides:
            if self.resize == "square":
                out.append((side, side))
                continue
            if aspect is None:
                short, long = min(width, height), max(width, height)
                n = max(1, round(long * side / short))
                landscape = height <= width
            else:
                landscape = aspect >= 1
                n = max(side, round(side * (aspect if landscape else 1 / aspect)))
            out.append((side, n) if landscape else (n, side))
        return out

    def __call__(self, image: Image.Image, aspect: float | None = None) -> list[torch.Tensor]:
        image = to_rgb(image)
        # resized as PIL images, as training's in-loop evaluation does (isc_research.augment.eval_transform)
        return [
            _uint8_chw(T.functional.resize(image, list(shape), INTERPOLATIONS[self.interpolation], antialias=True))
            for shape in self.shapes(*image.size, aspect)
        ]

    def fingerprint(self) -> dict:
        # exact-aspect files stay valid; the bucketed shapes also depend on the batch size (extract_to_hdf5's key)
        step = {} if self.aspect_step is None else {"aspect_step": self.aspect_step}
        bicubic = (
            {} if self.interpolation == "bilinear" else {"interpolation": self.interpolation}
        )  # old files stay valid
        return {"size": self.size, "resize": self.resize, "scales": self.scales, **step, **bicubic}


def _uint8_chw(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a (3, h, w) uint8 view of its (h, w, 3) pixels (stacking makes the NCHW batch)."""
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)


PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


class ModelExtractor:
    """A descriptor model with test-time augmentation: the sum of the view descriptors, L2-normalised.
    `precision` "bf16" or "16" runs the model under autocast (lyakaap extracted in fp16 autocast, RECIPES §2.4);
    the descriptors are summed and normalised in float32 either way. uint8 views are normalised on the
    device (ImageNet statistics, the same float32 arithmetic as training's ToNormalisedTensor)."""

    def __init__(
        self,
        model: torch.nn.Module,
        transform: EvalTransform,
        *,
        flip: bool = False,
        device: torch.device = torch.device("cpu"),
        name: str = "model",
        weights_id: str = "",
        precision: str = "32",
    ) -> None:
        if str(precision) not in PRECISIONS:
            raise ValueError(f"eval.precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.model = model.eval().to(device)
        self.transform = transform
        self.flip = flip
        self.device = torch.device(device)
        self.name = name
        self.precision = str(precision)
        self.weights_id = weights_id or state_fingerprint(model)
        norm = ToNormalisedTensor()
        self._scale, self._shift = norm.scale[None].to(self.device), norm.shift[None].to(self.device)
        self._largest: dict[tuple, int] = {}  # per input shape, the largest batch run so far

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        dtype = PRECISIONS[self.precision]
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return self.model(batch).float()

    def _normalised(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device, non_blocking=True)  # asynchronous from pinned memory
        if batch.dtype == torch.uint8:
            batch = batch.to(torch.float32).mul_(self._scale).sub_(self._shift)
        return batch

    def _padded(self, batch: torch.Tensor) -> torch.Tensor:
        """On a GPU with cuDNN autotuning, a smaller batch of a shape already run (the last, partial one) is
        padded to that size: a new batch shape would autotune every convolution again (seconds for big nets)."""
        if self.device.type != "cuda" or not torch.backends.cudnn.benchmark:
            return batch
        key = tuple(batch.shape[1:])
        largest = self._largest.setdefault(key, len(batch))
        if len(batch) >= largest:
            self._largest[key] = len(batch)
            return batch
        return torch.cat([batch, batch.new_zeros(largest - len(batch), *key)])

    @torch.no_grad()
    def embed_on_device(self, views: list) -> torch.Tensor:
        """(n, d) float32 descriptors, left on the device (the extraction loop copies them back one batch
        later, so that the host never waits for the GPU). `views`: per scale, either the (rows, uint8 or
        float batch) groups of `collate_views` or a list of (3, h, w) tensors."""
        total: torch.Tensor | None = None
        for scale_views in views:
            # (rows, batch) pairs from collate_views (lists after pinning in some torch versions), else images
            groups = group_views(scale_views) if isinstance(scale_views[0], torch.Tensor) else scale_views
            for rows, batch in groups:  # square resizes: one group; keep-aspect: one per image shape
                batch = self._padded(self._normalised(batch))
                out = self._forward(batch)
                if self.flip:
                    out = out + self._forward(torch.flip(batch, dims=[-1]))
                out = out[: len(rows)]
                if total is None:
                    n = sum(len(r) for r, _ in groups)
                    total = torch.zeros(n, out.shape[1], device=out.device)
                total[rows.to(out.device, non_blocking=True)] += out  # pinned rows: no host sync
        return F.normalize(total, dim=-1)

    def embed(self, views: list) -> np.ndarray:
        return self.embed_on_device(views).cpu().numpy()

    def fingerprint(self) -> dict:
        precision = {} if self.precision == "32" else {"precision": self.precision}  # fp32 files stay valid
        return {
            "kind": "model",
            "weights": self.weights_id,
            "flip": self.flip,
            **precision,
            **self.transform.fingerprint(),
        }


def state_fingerprint(model: torch.nn.Module) -> str:
    """SHA-1 of a model's parameters and buffers (names, shapes, values)."""
    h = hashlib.sha1()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def group_views(views: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(rows, stacked views) per distinct view shape, in order of first appearance."""
    by_shape: dict[tuple, list[int]] = {}
    for i, v in enumerate(views):
        by_shape.setdefault(tuple(v.shape), []).append(i)
    return [(torch.tensor(rows, dtype=torch.long), torch.stack([views[i] for i in rows])) for rows in by_shape.values()]


def collate_views(batch: list[dict | None]) -> dict:
    """Per scale, the views stacked by shape (in the data worker: one tensor per shape crosses to the main
    process, not one per image); the record indices; the count of unreadable images."""
    kept = [s for s in batch if s is not None]
    out = {"skipped": len(batch) - len(kept), "index": torch.tensor([s["index"] for s in kept], dtype=torch.long)}
    if kept:
        views = [s["image"] for s in kept]
        views = [v if isinstance(v, (list, tuple)) else [v] for v in views]
        out["views"] = [group_views([v[j] for v in views]) for j in range(len(views[0]))]
    return out


def aspect_buckets(sizes: Sequence[tuple[int, int]], batch_size: int, step: float) -> np.ndarray:
    """Per image, the aspect ratio (width / height) its keep-aspect views get so that extraction runs full batches:
    landscape (and square) and portrait images apart, each sorted by ratio r = long / short (ties by position) and
    cut into runs of `batch_size`; adjacent runs share one shape while their ratios span at most `step`, each
    group resized to its median ratio. Every group but the last of each orientation holds whole batches, so
    batching a group's images gives full batches. NaN for an unreadable size (0, 0).

    Why runs of whole batches rather than a fixed grid of ratios (long side to a multiple of step × side): the grid
    made ~one shape per step, each with a partial batch (mini-DISC: 24 shapes, 31 forwards for 8 batches' worth).
    Why stretch rather than pad to the group's largest shape: the padded zeros enter the convolutions and the
    pooling, so the descriptor moves with the padding, not only with the (small, measured) stretch."""
    if batch_size < 1 or not 0 < step <= 1:
        raise ValueError(f"aspect_buckets needs batch_size >= 1 and 0 < step <= 1, got {batch_size}, {step}")
    wh = np.asarray(sizes, np.float64).reshape(-1, 2)
    out = np.full(len(wh), np.nan)
    readable = (wh > 0).all(1)
    for landscape in (True, False):
        rows = np.flatnonzero(readable & ((wh[:, 0] >= wh[:, 1]) == landscape))
        if not len(rows):
            continue
        ratio = wh[rows].max(1) / wh[rows].min(1)
        order = np.lexsort((rows, ratio))
        rows, ratio = rows[order], ratio[order]
        starts = list(range(0, len(rows), batch_size)) + [len(rows)]
        i = 0
        while i < len(starts) - 1:  # a group: runs i..j-1, extended while the ratios span at most `step`
            j = i + 1
            while j < len(starts) - 1 and ratio[starts[j + 1] - 1] - ratio[starts[i]] <= step:
                j += 1
            group = slice(starts[i], starts[j])
            median = float(np.median(ratio[group]))
            out[rows[group]] = median if landscape else 1 / median
            i = j
    return out


def view_shapes(
    records: Sequence[ImageRecord], transform, *, batch_size: int, draft: int | None = None, num_workers: int = 0
) -> tuple[list[tuple], list[float | None] | None]:
    """Per record, the (h, w) of each view the extraction makes (() for an unreadable header), and the aspect ratios
    `aspect_buckets` gives the records (None: each image keeps its own). Keep-aspect reads the sizes from the file
    headers, in the data workers; square needs none."""
    if getattr(transform, "resize", "square") == "square":  # EvalTransform's square views, or a baseline's one
        return [tuple(transform.shapes(1, 1)) if hasattr(transform, "shapes") else ()] * len(records), None
    loader = DataLoader(
        ImageSizes(records, draft),
        batch_size=1024,
        num_workers=num_workers,
        collate_fn=_as_list,
        **_worker_options(num_workers),
    )
    sizes = [wh for part in loader for wh in part]
    aspects = None
    if transform.aspect_step is not None:
        aspects = [None if math.isnan(a) else a for a in aspect_buckets(sizes, batch_size, transform.aspect_step)]
    shapes = [
        tuple(transform.shapes(w, h, None if aspects is None else aspects[i])) if w and h else ()
        for i, (w, h) in enumerate(sizes)
    ]
    return shapes, aspects


def plan_batches(
    shapes: Sequence[tuple], chunks: Sequence[int], chunk_size: int, batch_size: int, max_lag: int = 8
) -> list[list[int]]:
    """Batches (record indices) of the given chunks, each of one view shape, full except at most one per shape:
    chunk by chunk, each shape's images join the ones left over from earlier chunks and run in whole batches; a
    remainder waits for the next chunks, unless its oldest image is `max_lag` chunks behind (then it runs as it is,
    so at most max_lag + 1 chunks wait for their last descriptors: the memory held stays bounded). The last
    chunk's remainders run at the end. A shape rarer than one batch per `max_lag` chunks makes more partial
    batches; square views (one shape) and keep-aspect groups of whole batches (`aspect_buckets`) do not."""
    n = len(shapes)
    _, key = np.unique(np.array([hash(s) for s in shapes], np.int64), return_inverse=True)
    key = key.reshape(-1)
    position = {c: p for p, c in enumerate(chunks)}
    waiting: dict[int, list[int]] = {}
    batches: list[list[int]] = []
    for p, c in enumerate(chunks):
        start, stop = c * chunk_size, min(n, (c + 1) * chunk_size)
        rows = start + np.argsort(key[start:stop], kind="stable")
        keys, first = np.unique(key[rows], return_index=True)
        for k, part in zip(keys.tolist(), np.split(rows, first[1:])):
            queue = waiting.setdefault(k, [])
            queue += part.tolist()
            full = len(queue) // batch_size * batch_size
            batches += [queue[s : s + batch_size] for s in range(0, full, batch_size)]
            del queue[:full]
        for k in sorted(waiting):
            if waiting[k] and position[waiting[k][0] // chunk_size] <= p - max_lag:
                batches.append(waiting.pop(k))
    batches += [waiting[k] for k in sorted(waiting) if waiting[k]]
    return batches


def eval_loader(dataset: EvalImages, batches: list[list[int]], num_workers: int, device: torch.device) -> DataLoader:
    """The extraction's DataLoader: the given batches, collated by view shape in the workers, pinned for a GPU."""
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=collate_views,
        pin_memory=device.type == "cuda",
        **_worker_options(num_workers),
    )


def _as_list(items: list) -> list:
    return items


def _worker_options(num_workers: int, prefetch: int = 4) -> dict:
    """DataLoader settings for one pass: fork (workers start in milliseconds without re-importing torch and
    isc; Python 3.14 makes forkserver the default on Linux) and a few batches prefetched per worker."""
    if num_workers == 0:
        return {}
    options: dict = {"prefetch_factor": prefetch}
    if "fork" in mp.get_all_start_methods():
        options["multiprocessing_context"] = "fork"
    return options


def file_states(records: Sequence[ImageRecord]) -> str:
    """SHA-1 over each record's (id, size, modification time): a replaced or repaired image changes it. A missing
    file counts as (-1, -1); the extraction then names it (or skips it with skip_bad_images)."""
    h = hashlib.sha1()
    for r in records:
        try:
            st = os.stat(r.path)
            state = (st.st_size, st.st_mtime_ns)
        except OSError:
            state = (-1, -1)
        h.update(f"{r.id}\t{state[0]}\t{state[1]}\n".encode())
    return h.hexdigest()


def _fingerprint(
    extractor, records: Sequence[ImageRecord], skip_bad_images: bool = False, batch_size: int | None = None
) -> str:
    ids = hashlib.sha1("\n".join(r.id for r in records).encode()).hexdigest()
    content = {
        "extractor": extractor.fingerprint(),
        "ids": ids,
        "n": len(records),
        "files": file_states(records),
        "skip_bad_images": bool(skip_bad_images),
    }
    if getattr(extractor.transform, "aspect_step", None) is not None:  # aspect_buckets groups whole batches
        content["aspect_batch"] = batch_size
    if any(r.crop is not None for r in records):  # cropped queries (isc_research.detect.query_crop) are other images
        content["crops"] = hashlib.sha1(repr([(r.id, r.crop) for r in records if r.crop]).encode()).hexdigest()
    return json.dumps(content, sort_keys=True)


def _why_different(stored: str | None, fingerprint: str) -> str:
    """Which part of the cache key changed, in words (for the rebuild warning)."""
    try:
        old, new = json.loads(stored), json.loads(fingerprint)
    except (TypeError, ValueError):
        return "it has no readable cache key"
    names = {
        "extractor": "the model or transform",
        "ids": "the image list",
        "n": "the image list",
        "files": "image files changed (size or modification time)",
        "crops": "the query crops",
        "skip_bad_images": "the skip policy (eval.skip_bad_images)",
        "aspect_batch": "the batch size, which sets the keep-aspect shapes (eval.aspect_step)",
    }
    changed = sorted({names.get(k, k) for k in set(old) | set(new) if old.get(k) != new.get(k)})
    return "changed: " + ", ".join(changed) if changed else "its chunk size differs"


def _chunk_crc(vectors: np.ndarray, valid: np.ndarray) -> int:
    """CRC-32 of a chunk's valid flags and the vectors of its valid rows (the others are never read)."""
    kept = np.ascontiguousarray(vectors[valid] if len(valid) else vectors[:0], np.float32)
    return zlib.crc32(kept.tobytes(), zlib.crc32(valid.tobytes())) & 0xFFFFFFFF


def _bad_chunks(f: h5py.File, chunk_size: int) -> list[int]:
    """Chunks flagged done whose vectors do not match the CRC written with them (lost or damaged writes)."""
    done, crc, n = f["chunk_done"][:], f["chunk_crc"][:], len(f["valid"])
    bad = []
    for c in np.flatnonzero(done):
        start, stop = c * chunk_size, min(n, (c + 1) * chunk_size)
        valid = f["valid"][start:stop]
        vectors = f["vectors"][start:stop] if "vectors" in f else np.zeros((stop - start, 0), np.float32)
        if _chunk_crc(vectors, valid) != int(crc[c]):
            bad.append(int(c))
    return bad


def _open(path: Path, fingerprint: str, records: Sequence[ImageRecord], chunk_size: int) -> h5py.File | None:
    """The existing file if it was made for the same cache key and its finished chunks pass their CRC check
    (None: it is complete), else a new one. Every rebuild or re-extraction is logged with its reason."""
    n_chunks = max(1, math.ceil(len(records) / chunk_size))
    if path.exists():
        try:
            with h5py.File(path, "r") as f:  # read-only first: a finished file is left untouched
                same = f.attrs.get("fingerprint") == fingerprint and f.attrs.get("chunk_size") == chunk_size
                why = "" if same else _why_different(f.attrs.get("fingerprint"), fingerprint)
                bad = _bad_chunks(f, chunk_size) if same else []
                finished = same and not bad and bool(f["chunk_done"][:].all())
            if finished:
                return None
            if same:
                f = h5py.File(path, "r+")
                if bad:
                    log.warning(
                        "%s: %d chunk(s) flagged done fail their CRC check (a write lost to a full disk?): "
                        "extracting them again",
                        path,
                        len(bad),
                    )
                    f["chunk_done"][bad] = False
                    f.flush()
                return f
            log.warning("%s is a descriptor cache for other inputs (%s): extracting again", path, why)
        except (OSError, KeyError, RuntimeError) as error:  # e.g. killed while writing: the file is unreadable
            log.warning("%s cannot be reopened (%s): extracting again", path, error)
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        f = h5py.File(path, "w")
    except OSError as error:
        raise OSError(
            f"cannot create the descriptor cache {path} ({error}); is the folder writable? "
            "Set eval.descriptor_dir (or paths.output_dir) to a writable folder"
        ) from None
    f.attrs["fingerprint"] = fingerprint
    f.attrs["chunk_size"] = chunk_size
    ids = np.array([r.id for r in records], dtype=object)
    f.create_dataset("ids", data=ids.astype("S") if len(ids) else np.zeros(0, "S1"))
    f.create_dataset("valid", shape=(len(records),), dtype=bool, fillvalue=False)
    f.create_dataset("chunk_done", shape=(n_chunks,), dtype=bool, fillvalue=len(records) == 0)
    f.create_dataset(
        "chunk_crc",
        shape=(n_chunks,),
        dtype=np.uint32,
        fillvalue=_chunk_crc(np.zeros((0, 0), np.float32), np.zeros(0, bool)) if not records else 0,
    )
    f.flush()
    return f


def extract_to_hdf5(
    extractor,
    records: Sequence[ImageRecord],
    path: str | Path,
    *,
    chunk_size: int = 4096,
    batch_size: int = 128,
    num_workers: int = 0,
    skip_bad_images: bool = False,
    draft_size: int | None = None,
    desc: str = "descriptors",
) -> Path:
    """Write the descriptors of `records` to `path` (resuming a previous partial run); returns `path`.

    `extractor` has `transform` (PIL image → tensor or list of tensors), `embed(views) -> (n, d) array`
    (views: per scale, the (rows, stacked views) groups of `collate_views`; a model extractor also has
    `embed_on_device`, whose result the loop copies back one batch late) and `fingerprint() -> dict`.
    """
    if chunk_size < 1 or batch_size < 1:
        raise ValueError(f"chunk_size and batch_size must be >= 1, got {chunk_size}, {batch_size}")
    path = Path(path)
    records = list(records)
    f = _open(path, _fingerprint(extractor, records, skip_bad_images, batch_size), records, chunk_size)
    if f is None:
        log.info("%s: all %d descriptors already in %s", desc, len(records), path)
        return path
    with f:
        done = f["chunk_done"][:]
        pending = [c for c in range(len(done)) if not done[c]]
        if len(pending) < len(done):
            log.info("%s: resuming, %d of %d chunks already done", desc, len(done) - len(pending), len(done))
        draft = draft_floor(draft_size, *getattr(extractor.transform, "sides", ()))  # never below the eval side
        shapes, aspects = view_shapes(
            records, extractor.transform, batch_size=batch_size, draft=draft, num_workers=num_workers
        )
        batches = plan_batches(shapes, pending, chunk_size, batch_size)  # a batch may span chunks
        device = torch.device(getattr(extractor, "device", "cpu"))
        embed = getattr(extractor, "embed_on_device", extractor.embed)
        loader = eval_loader(
            EvalImages(records, extractor.transform, skip_bad_images, draft, aspects), batches, num_workers, device
        )
        buffer: dict[int, list] = {}
        remaining = {c: min(len(records), (c + 1) * chunk_size) - c * chunk_size for c in pending}  # images left
        skipped = 0
        in_flight: tuple | None = None  # the previous batch: its descriptors are copied back after the next starts

        def finish(rows: list[int], index: torch.Tensor, vectors) -> None:
            index = index.numpy()
            vectors = (
                None
                if vectors is None
                else np.asarray(vectors.cpu().numpy() if isinstance(vectors, torch.Tensor) else vectors, np.float32)
            )
            chunk_of_row, chunk_of_index = np.asarray(rows) // chunk_size, index // chunk_size
            for c in np.unique(chunk_of_row).tolist():
                mine = chunk_of_index == c
                if mine.any():
                    buffer.setdefault(c, []).append((index[mine], vectors[mine]))
                remaining[c] -= int((chunk_of_row == c).sum())
                if remaining[c] == 0:
                    _write_chunk(f, c, chunk_size, len(records), buffer.pop(c, []))
            bar.update(len(rows))

        with tqdm(total=sum(len(b) for b in batches), desc=desc, unit="img") as bar:
            for batch_indices, batch in zip(batches, loader):
                skipped += batch["skipped"]
                current = (batch_indices, batch["index"], embed(batch["views"]) if len(batch["index"]) else None)
                if in_flight is not None:
                    finish(*in_flight)
                in_flight = current
            if in_flight is not None:
                finish(*in_flight)
    if skipped:
        log.warning("%s: skipped %d unreadable images of %d", desc, skipped, len(records))
    return path


def _write_chunk(f: h5py.File, c: int, chunk_size: int, n: int, parts: list) -> None:
    """Write chunk `c`, flush, then flag it done with its CRC and flush again: a flag is never on disk before its
    data. Free space is checked first (h5py reports some write errors only while freeing objects, where they
    are lost); any write error becomes an OSError that names the file."""
    start, stop = c * chunk_size, min(n, (c + 1) * chunk_size)
    dim = parts[0][1].shape[1] if parts else (f["vectors"].shape[1] if "vectors" in f else 0)
    _check_free_space(Path(f.filename), (stop - start) * dim * 4)
    vectors = np.zeros((stop - start, dim), np.float32)
    valid = np.zeros(stop - start, bool)
    for index, vec in parts:
        vectors[index - start] = vec
        valid[index - start] = True
    try:
        if parts and "vectors" not in f:
            f.create_dataset("vectors", shape=(n, dim), dtype=np.float32, chunks=(min(chunk_size, n), dim))
        if parts:
            vector_data, valid_data = f["vectors"], f["valid"]  # held until flushed: errors surface in flush()
            vector_data[start:stop] = vectors
            valid_data[start:stop] = valid
        f.flush()
        done, crc = f["chunk_done"], f["chunk_crc"]
        crc[c] = _chunk_crc(vectors, valid)
        done[c] = True  # only after the vectors are on disk
        f.flush()
    except (OSError, RuntimeError) as error:
        message = (
            f"writing descriptors to {f.filename} failed ({' '.join(str(error).split())[:300]}): disk full? "
            "Free space or set eval.descriptor_dir to another disk, then rerun the same command (the "
            "chunks already written are kept and checked)"
        )
        log.error(message)  # before closing: h5py may crash while freeing a file whose writes failed
        raise OSError(message) from None


MIN_FREE_BYTES = 16 << 20  # margin for HDF5 metadata and other writers


def _check_free_space(path: Path, needed: int) -> None:
    free = shutil.disk_usage(path.parent).free
    if free < needed + MIN_FREE_BYTES:
        raise OSError(
            f"writing descriptors to {path}: only {free / 2**20:.1f} MiB free on its disk, "
            f"{(needed + MIN_FREE_BYTES) / 2**20:.1f} MiB needed for the next chunk: disk full? Free space or "
            "set eval.descriptor_dir to another disk, then rerun the same command"
        )


def read_descriptors(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids as a str array, float32 vectors) of the readable images of a finished extraction file."""
    path = Path(path)
    with h5py.File(path, "r") as f:
        done = f["chunk_done"][:]
        if not done.all():
            raise RuntimeError(
                f"{path}: extraction incomplete ({int(done.sum())} of {len(done)} chunks); "
                "rerun the same command to resume it"
            )
        bad = _bad_chunks(f, int(f.attrs["chunk_size"]))
        if bad:
            raise RuntimeError(
                f"{path}: {len(bad)} chunk(s) fail their CRC check (damaged, or a write lost to a "
                "full disk); rerun the same command to extract them again"
            )
        ids = f["ids"][:].astype(str)
        valid = f["valid"][:]
        if "vectors" not in f:
            return np.zeros(0, str), np.zeros((0, 0), np.float32)
        vectors = f["vectors"][:]
    if not valid.all():
        ids, vectors = ids[valid], vectors[valid]
    return ids, vectors


def checkpoint_paths(cfg: DictConfig) -> list[str]:
    paths = cfg.get("ckpt_path")
    if paths is None:
        return []
    return [str(p) for p in paths] if isinstance(paths, (list, ListConfig)) else [str(paths)]


def build_extractors(cfg: DictConfig) -> list:
    """One extractor per checkpoint of ckpt_path, or the classical baseline of `baseline`."""
    ev = cfg.eval
    if cfg.get("baseline"):
        from isc_research.baselines import BaselineExtractor

        if checkpoint_paths(cfg):
            raise ValueError("set either ckpt_path or baseline, not both")
        return [BaselineExtractor(str(cfg.baseline))]
    paths = checkpoint_paths(cfg)
    if not paths:
        raise ValueError(
            "isc-eval needs ckpt_path=PATH (or a list [A,B] for an ensemble), or baseline=phash|pdq|thumbnail"
        )
    device = resolve_device(ev.device)
    extractors = []
    for i, path in enumerate(paths):
        model, train_config = load_checkpoint(path)
        size = ev.size or (train_config.get("data") or {}).get("eval_size")
        if not size:
            raise ValueError(f"eval.size is not set and {path} does not record data.eval_size: pass eval.size=N")
        transform = EvalTransform(
            int(size),
            ev.resize,
            list(ev.tta.scales),
            aspect_step=ev.aspect_step,
            interpolation=ev.get("interpolation", "bilinear"),
        )
        extractors.append(
            ModelExtractor(
                model, transform, flip=bool(ev.tta.flip), device=device, name=f"model{i}", precision=str(ev.precision)
            )
        )
    return extractors
