"""``isc-export``: a checkpoint's whole descriptor model as TorchScript and ONNX files for deployment.

  isc-export CKPT [--out DIR] [--format torchscript onnx] [--size S]

writes (DIR: by default outputs/export/runs/<time>/, $ISC_LOG_DIR instead of outputs when set)
DIR/<name>.torchscript.pt and DIR/<name>.onnx (images (B, 3, S, S) → L2-normalised descriptors) with a
sidecar <file>.json describing the preprocessing (size, ImageNet mean/std; also stored inside each file), then
checks that each file gives the checkpoint model's descriptors on a random batch (max abs diff ≤ --tolerance,
exit status 1 otherwise), and the check's report to DIR/export.json. Not to be confused with ``isc-export-backbone``,
which writes only the backbone's
weights (a state dict) to initialise another training run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from isc_research.summary import Timer, link_latest, print_summary

PROG = "isc-export"
FORMATS = {"torchscript": ".torchscript.pt", "onnx": ".onnx"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", help="an isc-train checkpoint (.ckpt); or --ckpt-path")
    p.add_argument(
        "--ckpt-path",
        "--checkpoint",
        dest="ckpt_path",
        default=None,
        help="the checkpoint, as the other tools name it (ckpt_path= in isc-eval, --ckpt-path here)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: outputs/export/runs/<time>/; outputs = $ISC_LOG_DIR when set)",
    )
    p.add_argument("--name", default=None, help="file name stem (default: the checkpoint's)")
    p.add_argument("--format", nargs="+", choices=sorted(FORMATS), default=["torchscript", "onnx"])
    p.add_argument("--size", type=int, default=None, help="input side S (default: the checkpoint's data.eval_size)")
    p.add_argument("--tolerance", type=float, default=1e-5, help="max abs descriptor difference allowed (1e-5)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    return p


def max_abs_diff(reference: torch.Tensor, other) -> float:
    return float((reference.double() - torch.as_tensor(other).double()).abs().max())


def export_checkpoint(
    checkpoint: str | Path,
    out: Path,
    formats: list[str],
    *,
    size: int | None = None,
    name: str | None = None,
    overwrite: bool = False,
    batch: int = 4,
) -> dict:
    """Export, then compare each file with the checkpoint model on a random batch; returns a JSON-ready report."""
    from isc_research.checkpoints import load_checkpoint
    from isc_research.extras import require
    from isc_research.export import (
        export_onnx,
        export_torchscript,
        load_onnx,
        load_torchscript,
        onnx_descriptors,
        preprocessing,
    )

    if "onnx" in formats:  # before any file is written
        require("onnx", "isc-export --format onnx")
        require("onnxruntime", "isc-export --format onnx (its check)")
    model, config = load_checkpoint(checkpoint)
    size = size or (config.get("data") or {}).get("eval_size")
    if not size:
        raise ValueError(f"{checkpoint} does not record data.eval_size: pass the input side with --size S (>= 8)")
    if int(size) < 8:
        raise ValueError(f"--size must be >= 8 (the input side in pixels), got {size}")
    size = int(size)
    stem = name or Path(checkpoint).stem
    paths = {f: out / f"{stem}{FORMATS[f]}" for f in formats}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist(s): pass --overwrite to replace, or another --out")
    meta = preprocessing(model, size, Path(checkpoint).expanduser().absolute())
    images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model.eval()(images)
    report = {"checkpoint": str(checkpoint), "size": size, "dim": int(expected.shape[1]), "files": {}}
    if "torchscript" in formats:
        export_torchscript(model, paths["torchscript"], size, meta)
        module, _ = load_torchscript(paths["torchscript"])
        with torch.no_grad():
            diff = max_abs_diff(expected, module(images))
        report["files"]["torchscript"] = {"path": str(paths["torchscript"]), "max_abs_diff": diff}
    if "onnx" in formats:
        export_onnx(model, paths["onnx"], size, meta)
        session, _ = load_onnx(paths["onnx"])
        report["files"]["onnx"] = {
            "path": str(paths["onnx"]),
            "max_abs_diff": max_abs_diff(expected, onnx_descriptors(session, images)),
        }
    return report


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``isc-export``; 0 ok, 1 an export differs from the checkpoint, 2 bad input."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    if (args.checkpoint is None) == (args.ckpt_path is None):
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: give the checkpoint once: CKPT or --ckpt-path CKPT", file=sys.stderr)
        return 2
    timer = Timer()
    task_root = Path(os.environ.get("ISC_LOG_DIR") or "outputs") / "export"
    out = args.out if args.out is not None else task_root / "runs" / time.strftime("%Y-%m-%d_%H-%M-%S")
    try:
        report = export_checkpoint(
            args.checkpoint or args.ckpt_path,
            out,
            args.format,
            size=args.size,
            name=args.name,
            overwrite=args.overwrite,
        )
    except (ValueError, OSError, RuntimeError, ImportError) as e:  # ImportError: isc_research.extras.MissingExtra
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    (out / "export.json").write_text(json.dumps(report, indent=2))
    bad = {f: r["max_abs_diff"] for f, r in report["files"].items() if not r["max_abs_diff"] <= args.tolerance}
    if bad:
        print(
            f"{PROG}: error: exported descriptors differ from the checkpoint's by {bad} > {args.tolerance} "
            f"(report: {(out / 'export.json').absolute()})",
            file=sys.stderr,
        )
        return 1
    link = link_latest(out, task_root) if args.out is None else None
    files = report["files"]
    print_summary(
        PROG,
        timer.seconds,
        [
            ("model", f"{report['dim']}-d descriptors of {report['size']}×{report['size']} images"),
            (
                "check",
                ", ".join(f"{f} max |difference| {r['max_abs_diff']:.1e}" for f, r in files.items())
                + f" to the checkpoint (tolerance {args.tolerance:g})",
            ),
        ],
        [
            ("folder", out),
            *((f, r["path"]) for f, r in files.items()),
            ("report", out / "export.json"),
            ("latest", link),
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
