"""Keep-aspect extraction against square on a mini-DISC (query/ + reference/ images of varied aspect ratios):
time of isc's whole extraction (`isc_research.extract.extract_to_hdf5`) in three modes, and how much the descriptors
move.

  square        every image resized to size × size (one shape: full batches);
  keep_exact    eval.resize=keep_aspect, eval.aspect_step=null: short side = size, each image its exact shape
                (SSCD's protocol); only images of one shape share a forward;
  keep_bucket   eval.aspect_step=STEP: the images, sorted by aspect ratio, in runs of whole batches, one shape per
                run (`isc_research.extract.aspect_buckets`): full batches, each image stretched to its run's median
                ratio.

Prints JSON: seconds per mode (median of --repeats, modes interleaved), forwards, distinct view shapes and view
pixels per mode (over square's: what the model computes on), keep / square time ratios (target for the bucketed
mode: ≤ 1.5), and the descriptor differences: each keep mode batched vs one image per forward at the same shapes
(max |Δ|: batching alone), keep_bucket vs keep_exact (cosine: the stretch) and the stretch itself (the long side's
change, relative). Random weights: the cosines say how far the descriptor moves, not what µAP does (isc-eval
with a trained checkpoint says that). Forwards and pixels do not depend on the machine's load; the seconds do.

    .venv/bin/python scripts/bench/keep_aspect.py --data DIR [--size 64] [--backbone mobilenetv3_small_050]
        [--device cpu|cuda] [--precision 32|bf16|16] [--workers 1] [--batch 128] [--step 0.125]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from isc_research.data.records import ImageRecord
from isc_research.extract import (
    PRECISIONS,
    EvalTransform,
    ModelExtractor,
    extract_to_hdf5,
    read_descriptors,
    view_shapes,
)
from isc_research.images import load_image
from isc_research.model import DescriptorModel


class Counting(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


def records_of(data: Path) -> list[ImageRecord]:
    out = []
    for split in ("query", "reference"):
        for p in sorted((data / split).iterdir()):
            if p.suffix.lower() in (".jpg", ".jpeg", ".png"):
                out.append(ImageRecord(p.stem, split, p))
    if not out:
        raise SystemExit(f"{data}: no images in query/ or reference/ (give a mini-DISC folder)")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--backbone", default="mobilenetv3_small_050")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--step", type=float, default=0.125, help="eval.aspect_step of the bucketed mode")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--single", type=int, default=64, help="images embedded one per forward for the batching check")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--precision", choices=sorted(PRECISIONS), default="32")
    p.add_argument("--channels-last", action="store_true")
    args = p.parse_args()
    records = records_of(args.data)
    torch.manual_seed(0)
    model = DescriptorModel(args.backbone, pretrained=False, embedding_dim=256)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = Counting(model)
    device = torch.device(args.device)
    modes = {
        "square": EvalTransform(args.size, "square"),
        "keep_exact": EvalTransform(args.size, "keep_aspect"),
        "keep_bucket": EvalTransform(args.size, "keep_aspect", aspect_step=args.step),
    }
    extractors = {m: ModelExtractor(model, t, device=device, precision=args.precision) for m, t in modes.items()}
    seconds: dict[str, list[float]] = {m: [] for m in modes}
    forwards, vectors = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats + 1):  # pass 0 warms up (allocator, autotuning), untimed
            for mode in list(modes) if repeat % 2 == 0 else list(modes)[::-1]:
                path = Path(tmp) / f"{mode}_{repeat}.h5"
                model.calls = 0
                start = time.perf_counter()
                extract_to_hdf5(
                    extractors[mode], records, path, batch_size=args.batch, num_workers=args.workers, desc=mode
                )
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if repeat:
                    seconds[mode].append(time.perf_counter() - start)
                forwards[mode] = model.calls
                ids, vectors[mode] = read_descriptors(path)
                assert ids.tolist() == [r.id for r in records], "extraction changed the order of the ids"
                path.unlink()
    plans = {m: view_shapes(records, t, batch_size=args.batch) for m, t in modes.items()}
    single, batched_vs_single = args.single, {}
    for mode in ("keep_exact", "keep_bucket"):
        extractor, aspects = extractors[mode], plans[mode][1]
        with torch.no_grad():  # one image per forward at the same shapes: no batching at all
            alone = np.stack(
                [
                    extractor.embed(
                        [
                            [v]
                            for v in extractor.transform(
                                load_image(r.path), aspect=None if aspects is None else aspects[i]
                            )
                        ]
                    )[0]
                    for i, r in enumerate(records[:single])
                ]
            )
        batched_vs_single[mode] = float(np.abs(vectors[mode][:single] - alone).max())
    cos = (vectors["keep_bucket"] * vectors["keep_exact"]).sum(1)
    med = {m: statistics.median(s) for m, s in seconds.items()}
    shapes = {m: len(set(plan[0])) for m, plan in plans.items()}
    pixels = {m: sum(h * w for shape in plan[0] for h, w in shape) for m, plan in plans.items()}
    exact_long = np.array([max(shape[0]) for shape in plans["keep_exact"][0]], np.float64)
    bucket_long = np.array([max(shape[0]) for shape in plans["keep_bucket"][0]], np.float64)
    stretch = np.abs(bucket_long / exact_long - 1)
    print(
        json.dumps(
            {
                "benchmark": "keep_aspect",
                "data": str(args.data),
                "images": len(records),
                "backbone": args.backbone,
                "size": args.size,
                "aspect_step": args.step,
                "batch": args.batch,
                "workers": args.workers,
                "device": args.device,
                "precision": args.precision,
                "repeats": args.repeats,
                "seconds": {m: round(v, 2) for m, v in med.items()},
                "images_per_s": {m: round(len(records) / v, 1) for m, v in med.items()},
                "forwards": forwards,
                "distinct_shapes": shapes,
                "pixels_over_square": {m: round(v / pixels["square"], 3) for m, v in pixels.items()},
                "keep_exact_over_square": round(med["keep_exact"] / med["square"], 3),
                "keep_bucket_over_square": round(med["keep_bucket"] / med["square"], 3),
                "batched_vs_one_per_forward_max_abs": batched_vs_single,
                "bucket_long_side_stretch": {
                    "mean": round(float(stretch.mean()), 4),
                    "max": round(float(stretch.max()), 4),
                },
                "bucket_vs_exact_cosine": {
                    "mean": round(float(cos.mean()), 5),
                    "min": round(float(cos.min()), 5),
                    "p01": round(float(np.quantile(cos, 0.01)), 5),
                },
                "targets": {"keep_bucket_over_square": 1.5},
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
                f"torch {torch.__version__}",
                "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
