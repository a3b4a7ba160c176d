"""Descriptor extraction speed of the exported models on CPU: the eager checkpoint model (baseline) against its
TorchScript file and its ONNX file run by ONNX Runtime, side by side in this process. Prints JSON: images/s of
each (median over repetitions, the three run in turn so that a busy machine slows them alike), ratios to
eager, and the max abs descriptor difference to eager.

    .venv/bin/python scripts/bench/export.py [--checkpoint CKPT] [--batch 32] [--reps 15] [--threads 1 2]

Without --checkpoint: a randomly initialised default model (mobilenetv3_small_050, 256-d, 64 px). Inputs are
random preprocessed batches: decoding and resizing are not timed (they are the same for all three). Each
--threads value is one row (torch and ONNX Runtime get the same intra-op thread count): on a shared, busy
machine more threads than free cores slow PyTorch down far more than ONNX Runtime.
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

from isc_research.checkpoints import load_checkpoint
from isc_research.export import (
    export_onnx,
    export_torchscript,
    load_onnx,
    load_torchscript,
    onnx_descriptors,
    preprocessing,
)
from isc_research.model import DescriptorModel


def _model(checkpoint: str | None, size: int | None) -> tuple[torch.nn.Module, int, str]:
    if checkpoint:
        model, config = load_checkpoint(checkpoint)
        return model, int(size or config["data"]["eval_size"]), str(checkpoint)
    torch.manual_seed(0)
    return (
        DescriptorModel("mobilenetv3_small_050", embedding_dim=256).eval(),
        size or 64,
        "random mobilenetv3_small_050",
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--size", type=int, default=None, help="input side (default: the checkpoint's eval size)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="intra-op threads (torch and ORT alike)")
    args = p.parse_args()
    model, size, source = _model(args.checkpoint, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        meta = preprocessing(model, size)
        script_path = export_torchscript(model, Path(tmp) / "m.torchscript.pt", size, meta)
        onnx_path = export_onnx(model, Path(tmp) / "m.onnx", size, meta)
        rows = [_compare(model, script_path, onnx_path, size, threads, args) for threads in args.threads]
    print(
        json.dumps(
            {
                "model": source,
                "size": size,
                "batch": args.batch,
                "reps": args.reps,
                "rows": rows,
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
                f"torch {torch.__version__}",
            },
            indent=2,
        )
    )


def _compare(
    model: torch.nn.Module, script_path: Path, onnx_path: Path, size: int, threads: int, args: argparse.Namespace
) -> dict:
    torch.set_num_threads(threads)
    script, _ = load_torchscript(script_path)
    session, _ = load_onnx(onnx_path, threads=threads)
    batch = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    runners = {
        "eager": lambda: model(batch).numpy(),
        "torchscript": lambda: script(batch).numpy(),
        "onnxruntime": lambda: onnx_descriptors(session, batch),
    }
    times: dict[str, list[float]] = {k: [] for k in runners}
    outputs = {}
    with torch.inference_mode():
        for name, run in runners.items():
            for _ in range(args.warmup):  # TorchScript's profiling executor optimises over the first calls
                outputs[name] = run()
        for _ in range(args.reps):
            for name, run in runners.items():
                started = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - started)
    rate = {k: args.batch / statistics.median(v) for k, v in times.items()}
    return {
        "threads": threads,
        "images_per_s": {k: round(v, 1) for k, v in rate.items()},
        "ratio_vs_eager": {k: round(v / rate["eager"], 3) for k, v in rate.items()},
        "max_abs_diff_vs_eager": {k: float(np.abs(outputs[k] - outputs["eager"]).max()) for k in runners},
    }


if __name__ == "__main__":
    main()
