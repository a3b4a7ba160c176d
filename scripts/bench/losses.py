"""Loss cost: forward+backward time and peak memory of each loss at the recipe sizes (256 embeddings of
dim 256 = 128 images × 2 views, memory 20,000, classification losses at 100k classes), with
pytorch-metric-learning's implementation of the same math run side by side where one exists. Prints JSON.

    .venv/bin/python scripts/bench/losses.py [--batch 256] [--dim 256] [--memory 20000] [--classes 100000]
                                             [--repeats 5] [--threads 2]

Each (loss, implementation) runs in its own subprocess; "peak_mib" is the growth of the process's peak
resident memory over its state before the first forward (inputs, loss parameters and the filled memory
included in the baseline), i.e. what forward+backward add. On CUDA it is torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
CASES = {  # name: implementations (ours first)
    "ntxent": ["ours", "pml"],
    "infonce_entropy": ["ours"],
    "contrastive_xbm": ["ours", "pml"],
    "arcface": ["ours", "pml"],
    "barlow_twins": ["ours"],
    "visionforce": ["ours"],
}


def make_loss(name: str, impl: str, args):
    from omegaconf import OmegaConf

    from isc_research.losses.build import build_loss

    if impl == "pml":
        from pytorch_metric_learning import losses as pml

        if name == "ntxent":
            return pml.SelfSupervisedLoss(pml.NTXentLoss(temperature=0.1), symmetric=True), "pairs"
        if name == "contrastive_xbm":
            return pml.CrossBatchMemory(
                pml.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0), args.dim, memory_size=args.memory
            ), "labels"
        if name == "arcface":  # margin in degrees there
            return pml.ArcFaceLoss(args.classes, args.dim, margin=0.4 * 180 / torch.pi, scale=40.0), "labels"
    cfg = OmegaConf.load(ROOT / "conf" / "loss" / f"{name}.yaml")
    cfg = OmegaConf.merge({"model": {"embedding_dim": args.dim}, "data": {"eval_batch_size": 64}}, {"loss": cfg}).loss
    if "memory_size" in cfg:
        cfg.memory_size = args.memory
    if "callbacks" in cfg:
        del cfg["callbacks"]
    loss, _ = build_loss(cfg, num_classes=args.classes)
    return loss, "labels"


def measure(name: str, impl: str, args) -> dict:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    loss, mode = make_loss(name, impl, args)
    loss = loss.to(device)
    images = args.batch // 2
    labels = torch.arange(images, device=device).repeat_interleave(2)
    raw = torch.randn(args.batch, args.dim, device=device)
    if name == "contrastive_xbm":  # a full memory, as after the first epoch
        with torch.no_grad():
            for start in range(0, args.memory, args.batch):
                step_labels = torch.arange(start, start + args.batch, device=device) // 2 + 10**6
                loss(F.normalize(torch.randn(args.batch, args.dim, device=device), dim=1), step_labels)

    def step():
        x = raw.clone().requires_grad_(True)
        z = F.normalize(x, dim=1)
        out = loss(z[0::2], z[1::2]) if mode == "pairs" else loss(z, labels)
        value = out["loss"] if isinstance(out, dict) else out
        value.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    return {"loss": name, "impl": impl, "ms": 1000 * statistics.median(times), "peak_mib": round(peak, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256, help="embeddings per step (images × 2 views)")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--memory", type=int, default=20000)
    parser.add_argument("--classes", type=int, default=100000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # a child process: one measurement
        print(json.dumps(measure(args.case, args.impl, args)))
        return
    passthrough = [
        f"--{k}={getattr(args, k)}" for k in ("batch", "dim", "memory", "classes", "repeats", "threads", "device")
    ]
    results = []
    for name, impls in CASES.items():
        row = {"loss": name}
        for impl in impls:
            out = subprocess.run(
                [sys.executable, __file__, f"--case={name}", f"--impl={impl}", *passthrough],
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            if out.returncode:
                raise RuntimeError(f"{name}/{impl} failed:\n{out.stderr[-2000:]}")
            measured = json.loads(out.stdout.strip().splitlines()[-1])
            row[f"{impl}_ms"], row[f"{impl}_peak_mib"] = round(measured["ms"], 2), measured["peak_mib"]
        if "pml_ms" in row:
            row["time_ratio_ours_over_pml"] = round(row["ours_ms"] / row["pml_ms"], 3)
        results.append(row)
    print(
        json.dumps(
            {
                "config": {
                    k: getattr(args, k) for k in ("batch", "dim", "memory", "classes", "repeats", "threads", "device")
                },
                "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__},
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
