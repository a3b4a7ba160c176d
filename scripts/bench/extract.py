"""Descriptor extraction speed: isc's whole extraction (`isc_research.extract.extract_to_hdf5`: JPEG decoding, eval
transform, DataLoader workers, model, HDF5 chunks) against its two halves measured in the same process:
the data loader alone (`isc_research.extract.eval_loader`: decode + resize to uint8 batches, pinned for a GPU; no
model) and the model alone (uint8 batches already on the device: normalisation + forward, as the pipeline
runs them). Prints JSON:

  pipeline / loader / model images/s (medians over repetitions, the arms run in turn);
  pipeline_over_bound = pipeline / min(loader, model)   (target on a GPU: ≥ 0.8 at ≥ 20,000 images);
  pipeline_over_serial_bound = pipeline / (1 / (1/loader + 1/model))  (no overlap at all = 1.0; the 2-core
      CPU cannot overlap much: there the target is no regression, ≥ ~1);
  loader_scaling = W-worker rate / (W × one-worker rate), both measured here (target ≥ 0.7);
  first_batch_s = a pass's fixed cost: from starting the loader (worker start-up) to its first batch.

    .venv/bin/python scripts/bench/extract.py [--backbone mobilenetv3_small_050] [--size 64] [--images 512]
        [--batch 128] [--workers 1] [--device cpu|cuda] [--precision 32|bf16|16] [--resize square|keep_aspect]

GPU, lyakaap's extraction (EfficientNetV2-M, square 512, fp16 autocast, RECIPES §2.4):
    --device cuda --precision 16 --channels-last --backbone tf_efficientnetv2_m --size 512 --images 20000 --workers 14

The images are synthetic JPEGs (smooth random colour fields with noise, `--image-size` W×H, DISC-like sizes),
`--unique-images` files written once to a temporary folder (in parallel) and cycled through by the records
(distinct ids; the files stay in the page cache, as a warm DISC21 folder would); decoding uses the default
draft size (256) as isc-eval does. Random model weights: speed only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from isc_research.data.datasets import EvalImages
from isc_research.data.records import ImageRecord
from isc_research.extract import PRECISIONS, EvalTransform, ModelExtractor, eval_loader, extract_to_hdf5
from isc_research.images import draft_floor
from isc_research.model import DescriptorModel


def _write_one(job: tuple[str, int, int, int]) -> None:
    path, i, width, height = job
    rng = np.random.default_rng(i)
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.int16)
    image = np.clip(image + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
    Image.fromarray(image).save(path, quality=90)


def write_images(folder: Path, n: int, unique: int, width: int, height: int) -> list[ImageRecord]:
    paths = [folder / f"F{i:06d}.jpg" for i in range(min(n, unique))]
    with ProcessPoolExecutor(max_workers=max(1, min(16, os.cpu_count() or 1))) as pool:
        list(pool.map(_write_one, [(str(p), i, width, height) for i, p in enumerate(paths)], chunksize=64))
    return [ImageRecord(f"R{i:06d}", "reference", paths[i % len(paths)]) for i in range(n)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_pipeline(extractor: ModelExtractor, records, args, folder: Path, repeat: int) -> float:
    path = folder / f"descriptors_{repeat}.h5"  # a new file: nothing is resumed
    start = time.perf_counter()
    extract_to_hdf5(
        extractor,
        records,
        path,
        batch_size=args.batch,
        num_workers=args.workers,
        desc="pipeline",
        draft_size=args.draft_size,
    )
    _sync(extractor.device)
    seconds = time.perf_counter() - start
    path.unlink()
    return len(records) / seconds


def time_loader(extractor: ModelExtractor, records, args, workers: int) -> tuple[float, float]:
    """(images/s over the whole pass, seconds from starting the pass to its first batch)."""
    draft = draft_floor(args.draft_size, *extractor.transform.sides)
    dataset = EvalImages(records, extractor.transform, False, draft)
    batches = [list(range(s, min(s + args.batch, len(records)))) for s in range(0, len(records), args.batch)]
    start = time.perf_counter()
    first = None
    n = 0
    for batch in eval_loader(dataset, batches, workers, extractor.device):
        first = first or time.perf_counter() - start
        n += len(batch["index"])
    return n / (time.perf_counter() - start), first


def time_model(extractor: ModelExtractor, shape: tuple[int, ...], n: int, args) -> float:
    """uint8 batches already on the device: normalisation, forward, sum and L2 normalisation, as in the pipeline."""
    batch = torch.randint(0, 256, (args.batch, *shape), dtype=torch.uint8, device=extractor.device)
    views = [[(torch.arange(args.batch, device=extractor.device), batch)]]
    steps = max(1, n // args.batch)
    for _ in range(2):  # warm-up (cuDNN autotuning, allocator)
        extractor.embed_on_device(views)
    _sync(extractor.device)
    start = time.perf_counter()
    for _ in range(steps):
        out = extractor.embed_on_device(views)
    out.cpu()  # the pipeline copies every batch back
    _sync(extractor.device)
    return steps * args.batch / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="mobilenetv3_small_050")
    p.add_argument("--embedding-dim", type=int, default=256)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--resize", choices=("square", "keep_aspect"), default="square")
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--unique-images", type=int, default=2048, help="distinct JPEG files the records cycle through")
    p.add_argument("--image-size", default="640x480", help="W×H of the synthetic JPEGs")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--draft-size", type=int, default=256, help="as eval.draft_size")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--single-worker-images",
        type=int,
        default=None,
        help="images for the one-worker loader rate (default: images / workers, at least 2 batches)",
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--precision", choices=sorted(PRECISIONS), default="32")
    p.add_argument("--channels-last", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True
    width, height = (int(v) for v in args.image_size.lower().split("x"))
    torch.manual_seed(0)
    model = DescriptorModel(args.backbone, pretrained=False, embedding_dim=args.embedding_dim)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    transform = EvalTransform(args.size, args.resize)
    extractor = ModelExtractor(model, transform, device=torch.device(args.device), precision=args.precision)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        made = time.perf_counter()
        records = write_images(folder, args.images, args.unique_images, width, height)
        made = time.perf_counter() - made
        shape = tuple(transform(Image.open(records[0].path))[0].shape)
        n1 = args.single_worker_images or min(len(records), max(2 * args.batch, len(records) // max(1, args.workers)))
        pipeline, loader, first, model_only, one_worker = [], [], [], [], []
        for repeat in range(args.repeats):

            def load() -> None:
                rate, first_s = time_loader(extractor, records, args, args.workers)
                loader.append(rate)
                first.append(first_s)

            arms = [
                lambda: pipeline.append(time_pipeline(extractor, records, args, folder, repeat)),
                load,
                lambda: model_only.append(time_model(extractor, shape, args.images, args)),
            ]
            for arm in arms if repeat % 2 == 0 else arms[::-1]:
                arm()
        if args.workers > 1:
            one_worker.append(time_loader(extractor, records[:n1], args, 1)[0])
    pipe, load, mod = (statistics.median(x) for x in (pipeline, loader, model_only))
    serial = 1 / (1 / load + 1 / mod)
    print(
        json.dumps(
            {
                "benchmark": "extract",
                "backbone": args.backbone,
                "size": args.size,
                "resize": args.resize,
                "input_shape": list(shape),
                "images": args.images,
                "unique_files": min(args.images, args.unique_images),
                "image_size": [width, height],
                "batch": args.batch,
                "workers": args.workers,
                "device": args.device,
                "precision": args.precision,
                "channels_last": args.channels_last,
                "repeats": args.repeats,
                "pipeline_images_per_s": round(pipe, 1),
                "loader_images_per_s": round(load, 1),
                "model_images_per_s": round(mod, 1),
                "pipeline_over_bound": round(pipe / min(load, mod), 3),
                "pipeline_over_serial_bound": round(pipe / serial, 3),
                "pipeline_over_model": round(pipe / mod, 4),
                "loader_one_worker_images_per_s": round(one_worker[0], 1) if one_worker else None,
                "loader_one_worker_images": n1 if one_worker else None,
                "loader_scaling": round(load / (args.workers * one_worker[0]), 3) if one_worker else None,
                "first_batch_s": round(statistics.median(first), 3),
                "runs": {
                    "pipeline": [round(x, 1) for x in pipeline],
                    "loader": [round(x, 1) for x in loader],
                    "model": [round(x, 1) for x in model_only],
                    "first_batch_s": [round(x, 3) for x in first],
                },
                "jpeg_writing_s": round(made, 1),
                "targets": {"pipeline_over_bound": 0.8, "loader_scaling": 0.7, "min_images": 20000},
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                f"{torch.get_num_threads()} torch threads, torch {torch.__version__}",
                "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
