"""isc-export-backbone: write the backbone weights of a training checkpoint as a plain state dict, loadable
by another run with `backbone.weights_file=` (e.g. after a Barlow Twins pretraining stage). To deploy the whole
descriptor model (TorchScript / ONNX), use `isc-export` instead."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

PREFIX = "model.backbone."


def export_backbone(checkpoint: str | Path, output: str | Path) -> dict[str, torch.Tensor]:
    """Save `model.backbone.*` of a Lightning checkpoint (prefix stripped) to `output`; returns the state dict."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if "state_dict" not in state:
        raise ValueError(f"{path} is not a Lightning checkpoint of isc-train (no 'state_dict')")
    backbone = {k[len(PREFIX) :]: v for k, v in state["state_dict"].items() if k.startswith(PREFIX)}
    if not backbone:
        raise ValueError(f"{path} has no '{PREFIX}*' weights: is it an isc-train checkpoint?")
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    torch.save(backbone, output)
    return backbone


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", help="an isc-train checkpoint, e.g. outputs/<run>/checkpoints/last.ckpt")
    parser.add_argument("output", help="where to write the backbone state dict (.pth)")
    args = parser.parse_args(argv)
    weights = export_backbone(args.checkpoint, args.output)
    print(f"wrote {len(weights)} backbone tensors to {args.output}; use backbone.weights_file={args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
