"""Descriptor extraction speed: isc's whole extraction (`isc.extract.extract_to_hdf5`: JPEG decoding, eval
transform, DataLoader workers, model, HDF5 chunks) against the model alone on already-preprocessed tensors on
the device (the ceiling), and the data pipeline alone (decode + transform, no model), side by side in this
process. Prints JSON: images/s of each arm (median over repetitions, the arms run in turn), and
pipeline / model (the share of the model's speed that the whole extraction keeps).

    .venv/bin/python scripts/bench/extract.py [--backbone mobilenetv3_small_050] [--size 64] [--images 512]
        [--batch 128] [--workers 1] [--device cpu|cuda] [--precision 32|bf16|16] [--resize square|keep_aspect]

GPU, SSCD's extraction (ResNet-50, short side 288, RECIPES §8):
    --device cuda --precision bf16 --backbone resnet50 --size 288 --resize keep_aspect --images 4096 --workers 14
lyakaap's (EfficientNetV2-M, square 512, fp16 autocast, RECIPES §2.4):
    --device cuda --precision 16 --backbone tf_efficientnetv2_m --size 512 --images 4096 --workers 14

The images are synthetic JPEGs (smooth random colour fields with noise, `--image-size` W×H, DISC-like sizes),
written once to a temporary folder; decoding uses the default draft size (256) as isc-eval does, so images
larger than about twice the eval size are decoded at reduced size. Random model weights: speed only.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from isc.data.datasets import EvalImages
from isc.data.records import ImageRecord
from isc.extract import PRECISIONS, EvalTransform, ModelExtractor, collate_views, extract_to_hdf5
from isc.model import DescriptorModel


def write_images(folder: Path, n: int, width: int, height: int) -> list[ImageRecord]:
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.int16)
        image = np.clip(image + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
        path = folder / f"R{i:06d}.jpg"
        Image.fromarray(image).save(path, quality=90)
        records.append(ImageRecord(path.stem, "reference", path))
    return records


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_pipeline(extractor: ModelExtractor, records, args, folder: Path, repeat: int) -> float:
    path = folder / f"descriptors_{repeat}.h5"  # a new file: nothing is resumed
    start = time.perf_counter()
    extract_to_hdf5(extractor, records, path, batch_size=args.batch, num_workers=args.workers, desc="pipeline",
                    draft_size=args.draft_size)
    _sync(extractor.device)
    seconds = time.perf_counter() - start
    path.unlink()
    return len(records) / seconds


def time_loader(extractor: ModelExtractor, records, args) -> float:
    dataset = EvalImages(records, extractor.transform, False, args.draft_size)
    batches = [list(range(s, min(s + args.batch, len(records)))) for s in range(0, len(records), args.batch)]
    start = time.perf_counter()
    n = sum(len(b["index"]) for b in DataLoader(dataset, batch_sampler=batches, num_workers=args.workers,
                                                  collate_fn=collate_views))
    return n / (time.perf_counter() - start)


def time_model(extractor: ModelExtractor, shape: tuple[int, ...], n: int, args) -> float:
    batch = torch.randn(args.batch, *shape, device=extractor.device)
    steps = max(1, n // args.batch)
    for _ in range(2):  # warm-up (cuDNN autotuning, allocator)
        extractor.embed([list(batch)])
    _sync(extractor.device)
    start = time.perf_counter()
    for _ in range(steps):
        extractor.embed([list(batch)])  # as the pipeline: the same stacking, forward, sum and normalisation
    _sync(extractor.device)
    return steps * args.batch / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="mobilenetv3_small_050")
    p.add_argument("--embedding-dim", type=int, default=256)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--resize", choices=("square", "keep_aspect"), default="square")
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--image-size", default="640x480", help="W×H of the synthetic JPEGs")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--draft-size", type=int, default=256, help="as eval.draft_size")
    p.add_argument("--repeats", type=int, default=3)
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
        records = write_images(folder, args.images, width, height)
        made = time.perf_counter() - made
        shape = tuple(transform(Image.open(records[0].path))[0].shape)
        pipeline, loader, model_only = [], [], []
        for repeat in range(args.repeats):
            arms = [lambda: pipeline.append(time_pipeline(extractor, records, args, folder, repeat)),
                    lambda: loader.append(time_loader(extractor, records, args)),
                    lambda: model_only.append(time_model(extractor, shape, args.images, args))]
            for arm in (arms if repeat % 2 == 0 else arms[::-1]):
                arm()
    ratios = [a / b for a, b in zip(pipeline, model_only)]
    print(json.dumps({
        "benchmark": "extract", "backbone": args.backbone, "size": args.size, "resize": args.resize,
        "input_shape": list(shape), "images": args.images, "image_size": [width, height], "batch": args.batch,
        "workers": args.workers, "device": args.device, "precision": args.precision,
        "channels_last": args.channels_last, "repeats": args.repeats,
        "pipeline_images_per_s": round(statistics.median(pipeline), 1),
        "loader_images_per_s": round(statistics.median(loader), 1),
        "model_images_per_s": round(statistics.median(model_only), 1),
        "pipeline_over_model": round(statistics.median(ratios), 4),
        "runs": {"pipeline": [round(x, 1) for x in pipeline], "loader": [round(x, 1) for x in loader],
                 "model": [round(x, 1) for x in model_only]},
        "jpeg_writing_s": round(made, 1),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
    }, indent=2))


if __name__ == "__main__":
    main()
