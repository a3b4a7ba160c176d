"""Streaming, resumable descriptor extraction to HDF5, and the evaluation-time image transforms.

`extract_to_hdf5` runs an extractor over image records batch by batch and writes the descriptors to an
HDF5 file chunk by chunk (`chunk_size` images; never all images, nor all descriptors of a split, in memory
during extraction). Every finished chunk is flagged in the file; a rerun with the same extractor and records
skips the flagged chunks, so an interrupted extraction resumes where it stopped. A file made by another
model, transform or record list is not reused (its fingerprint differs): it is rebuilt.

File layout: ``ids`` (n, bytes), ``vectors`` (n, d) float32, ``valid`` (n,) bool (False: image unreadable and
skipped), ``chunk_done`` (n_chunks,) bool; attribute ``fingerprint`` (JSON).

Eval transforms (`EvalTransform`): square resize (lyakaap, RECIPES §2.4) or keep-aspect-ratio resize of the
short side (SSCD, §8), at one or several scales of `size` (lyakaap's TTA 1, 1/√2, √2; VisionForce's
200/256/320/400 ≈ 256 × 0.78/1/1.25/1.56, §4); with `flip`, each scale is also embedded mirrored. The
descriptors of all views are summed and L2-normalised.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2 as T
from tqdm import tqdm

from isc.augment.policies import ToNormalisedTensor
from isc.data.datasets import EvalImages
from isc.data.records import ImageRecord
from isc.images import draft_floor, to_rgb

log = logging.getLogger(__name__)

__all__ = ["EvalTransform", "ModelExtractor", "extract_to_hdf5", "read_descriptors"]

RESIZE_MODES = ("square", "keep_aspect")


# torchvision's resize filters: bilinear (isc's default, torchvision's) | bicubic (imgFp's EsViT eval, RECIPES §7)
INTERPOLATIONS = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}


class EvalTransform:
    """PIL image → one normalised float tensor (3, h, w) per scale."""

    def __init__(self, size: int, resize: str = "square", scales: Sequence[float] = (1.0,),
                 interpolation: str = "bilinear") -> None:
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"eval.interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}")
        if resize not in RESIZE_MODES:
            raise ValueError(f"eval.resize must be one of {RESIZE_MODES}, got {resize!r}")
        if not size or int(size) < 8:
            raise ValueError(f"eval.size must be an integer >= 8, got {size!r}")
        scales = [float(s) for s in scales]
        if not scales or min(scales) <= 0:
            raise ValueError(f"eval.tta.scales must be a non-empty list of positive factors, got {scales}")
        self.size, self.resize, self.scales, self.interpolation = int(size), resize, scales, interpolation
        self.sides = [max(8, round(self.size * s)) for s in scales]
        self._tensor = ToNormalisedTensor()  # the same conversion as training's views and in-loop evaluation

    def __call__(self, image: Image.Image) -> list[torch.Tensor]:
        image = to_rgb(image)
        views = []  # resized as PIL images, as training's in-loop evaluation does (isc.augment.eval_transform)
        for side in self.sides:
            if self.resize == "square":
                shape = (side, side)
            else:  # the short side becomes `side`
                w, h = image.size
                shape = (side, max(1, round(w * side / h))) if h <= w else (max(1, round(h * side / w)), side)
            views.append(self._tensor(T.functional.resize(image, list(shape), INTERPOLATIONS[self.interpolation],
                                                          antialias=True)))
        return views

    def fingerprint(self) -> dict:
        bicubic = {} if self.interpolation == "bilinear" else {"interpolation": self.interpolation}  # old files stay valid
        return {"size": self.size, "resize": self.resize, "scales": self.scales, **bicubic}


PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


class ModelExtractor:
    """A descriptor model with test-time augmentation: the sum of the view descriptors, L2-normalised.
    `precision` "bf16" or "16" runs the model under autocast (lyakaap extracted in fp16 autocast, RECIPES §2.4);
    the descriptors are summed and normalised in float32 either way."""

    def __init__(self, model: torch.nn.Module, transform: EvalTransform, *, flip: bool = False,
                 device: torch.device = torch.device("cpu"), name: str = "model", weights_id: str = "",
                 precision: str = "32") -> None:
        if str(precision) not in PRECISIONS:
            raise ValueError(f"eval.precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.model = model.eval().to(device)
        self.transform = transform
        self.flip = flip
        self.device = device
        self.name = name
        self.precision = str(precision)
        self.weights_id = weights_id or state_fingerprint(model)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        dtype = PRECISIONS[self.precision]
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return self.model(batch).float()

    @torch.no_grad()
    def embed(self, views: list[list[torch.Tensor]]) -> np.ndarray:
        n = len(views[0])
        total: torch.Tensor | None = None
        for scale_views in views:
            by_shape: dict[tuple, list[int]] = {}
            for i, v in enumerate(scale_views):
                by_shape.setdefault(tuple(v.shape), []).append(i)
            for rows in by_shape.values():  # square resizes: one group; keep-aspect: one per image shape
                batch = torch.stack([scale_views[i] for i in rows]).to(self.device)
                out = self._forward(batch)
                if self.flip:
                    out = out + self._forward(torch.flip(batch, dims=[-1]))
                if total is None:
                    total = torch.zeros(n, out.shape[1], device=out.device)
                total[rows] += out
        return F.normalize(total, dim=-1).cpu().numpy()

    def fingerprint(self) -> dict:
        precision = {} if self.precision == "32" else {"precision": self.precision}  # fp32 files stay valid
        return {"kind": "model", "weights": self.weights_id, "flip": self.flip, **precision,
                **self.transform.fingerprint()}


def state_fingerprint(model: torch.nn.Module) -> str:
    """SHA-1 of a model's parameters and buffers (names, shapes, values)."""
    h = hashlib.sha1()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def collate_views(batch: list[dict | None]) -> dict:
    """Keep the per-scale views as lists (keep-aspect resizes differ in shape); count unreadable images."""
    kept = [s for s in batch if s is not None]
    out = {"skipped": len(batch) - len(kept), "index": torch.tensor([s["index"] for s in kept], dtype=torch.long)}
    if kept:
        views = [s["image"] for s in kept]
        views = [v if isinstance(v, (list, tuple)) else [v] for v in views]
        out["views"] = [[v[j] for v in views] for j in range(len(views[0]))]
    return out


def _fingerprint(extractor, records: Sequence[ImageRecord]) -> str:
    ids = hashlib.sha1("\n".join(r.id for r in records).encode()).hexdigest()
    content = {"extractor": extractor.fingerprint(), "ids": ids, "n": len(records)}
    if any(r.crop is not None for r in records):  # cropped queries (isc.detect.query_crop) are other images
        content["crops"] = hashlib.sha1(repr([(r.id, r.crop) for r in records if r.crop]).encode()).hexdigest()
    return json.dumps(content, sort_keys=True)


def _open(path: Path, fingerprint: str, records: Sequence[ImageRecord], chunk_size: int) -> h5py.File | None:
    """The existing file if it was made for the same extractor and records (None: it is complete), else a
    new one."""
    n_chunks = max(1, math.ceil(len(records) / chunk_size))
    if path.exists():
        try:
            with h5py.File(path, "r") as f:  # read-only first: a finished file is left untouched
                same = f.attrs.get("fingerprint") == fingerprint and f.attrs.get("chunk_size") == chunk_size
                finished = same and bool(f["chunk_done"][:].all())
            if finished:
                return None
            if same:
                return h5py.File(path, "r+")
            log.warning("%s was made by another model, transform, chunk size or image list: extracting again", path)
        except (OSError, KeyError) as error:  # e.g. killed while writing: the file is unreadable
            log.warning("%s cannot be reopened (%s): extracting again", path, error)
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    f = h5py.File(path, "w")
    f.attrs["fingerprint"] = fingerprint
    f.attrs["chunk_size"] = chunk_size
    ids = np.array([r.id for r in records], dtype=object)
    f.create_dataset("ids", data=ids.astype("S") if len(ids) else np.zeros(0, "S1"))
    f.create_dataset("valid", shape=(len(records),), dtype=bool, fillvalue=False)
    f.create_dataset("chunk_done", shape=(n_chunks,), dtype=bool, fillvalue=len(records) == 0)
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
    (views: one list of tensors per view) and `fingerprint() -> dict`.
    """
    if chunk_size < 1 or batch_size < 1:
        raise ValueError(f"chunk_size and batch_size must be >= 1, got {chunk_size}, {batch_size}")
    path = Path(path)
    records = list(records)
    f = _open(path, _fingerprint(extractor, records), records, chunk_size)
    if f is None:
        log.info("%s: all %d descriptors already in %s", desc, len(records), path)
        return path
    with f:
        done = f["chunk_done"][:]
        pending = [c for c in range(len(done)) if not done[c]]
        if len(pending) < len(done):
            log.info("%s: resuming, %d of %d chunks already done", desc, len(done) - len(pending), len(done))
        batches = []
        for c in pending:
            start, stop = c * chunk_size, min(len(records), (c + 1) * chunk_size)
            batches += [list(range(s, min(s + batch_size, stop))) for s in range(start, stop, batch_size)]
        draft = draft_floor(draft_size, *getattr(extractor.transform, "sides", ()))  # never below the eval side
        dataset = EvalImages(records, extractor.transform, skip_bad_images, draft)
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=collate_views)
        buffer: dict[int, list] = {}
        remaining = {c: 0 for c in pending}
        for batch_indices in batches:
            remaining[batch_indices[0] // chunk_size] += 1
        skipped = 0
        with tqdm(total=sum(len(b) for b in batches), desc=desc, unit="img") as bar:
            for batch_indices, batch in zip(batches, loader):
                c = batch_indices[0] // chunk_size
                skipped += batch["skipped"]
                if len(batch["index"]):
                    buffer.setdefault(c, []).append((batch["index"].numpy(), extractor.embed(batch["views"])))
                remaining[c] -= 1
                if remaining[c] == 0:
                    _write_chunk(f, c, chunk_size, len(records), buffer.pop(c, []))
                bar.update(len(batch_indices))
    if skipped:
        log.warning("%s: skipped %d unreadable images of %d", desc, skipped, len(records))
    return path


def _write_chunk(f: h5py.File, c: int, chunk_size: int, n: int, parts: list) -> None:
    start, stop = c * chunk_size, min(n, (c + 1) * chunk_size)
    if parts and "vectors" not in f:
        dim = parts[0][1].shape[1]
        f.create_dataset("vectors", shape=(n, dim), dtype=np.float32, chunks=(min(chunk_size, n), dim))
    if parts:
        vectors = np.zeros((stop - start, f["vectors"].shape[1]), np.float32)
        valid = np.zeros(stop - start, bool)
        for index, vec in parts:
            vectors[index - start] = vec
            valid[index - start] = True
        f["vectors"][start:stop] = vectors
        f["valid"][start:stop] = valid
    f.flush()
    f["chunk_done"][c] = True  # only after the vectors are on disk
    f.flush()


def read_descriptors(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids as a str array, float32 vectors) of the readable images of a finished extraction file."""
    path = Path(path)
    with h5py.File(path, "r") as f:
        done = f["chunk_done"][:]
        if not done.all():
            raise RuntimeError(f"{path}: extraction incomplete ({int(done.sum())} of {len(done)} chunks); "
                               "rerun the same command to resume it")
        ids = f["ids"][:].astype(str)
        valid = f["valid"][:]
        if "vectors" not in f:
            return np.zeros(0, str), np.zeros((0, 0), np.float32)
        vectors = f["vectors"][:]
    if not valid.all():
        ids, vectors = ids[valid], vectors[valid]
    return ids, vectors
