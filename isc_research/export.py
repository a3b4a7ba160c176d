"""Deployable descriptor models: TorchScript and ONNX exports of an isc-train checkpoint's whole model.

An exported model maps a float32 batch (B, 3, S, S) of preprocessed images to the checkpoint model's
L2-normalised descriptors (B, D); B is free. Preprocessing (done by the caller, as isc-eval does it): decode
to 8-bit RGB, resize to S × S (square, antialiased), divide by 255, subtract the ImageNet mean and divide by
its std. `preprocessing` describes it; it is stored inside each file (TorchScript: the extra file
``isc_preprocessing.json``; ONNX: the metadata property ``isc_preprocessing``) and beside it (``<file>.json``).
isc-eval's test-time augmentation (extra scales, flips) is not part of the export: one view, as `eval.tta`'s
default. The ONNX file is written by torch's TorchScript-based exporter (`dynamo=False`, opset 17), which
needs no extra package; onnx and onnxruntime (the `export` extra) are needed to stamp and to check it.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from isc_research.augment.policies import IMAGENET_MEAN, IMAGENET_STD
from isc_research.extract import state_fingerprint

__all__ = ["METADATA_KEY", "export_onnx", "export_torchscript", "load_onnx", "load_torchscript", "preprocessing"]

METADATA_KEY = "isc_preprocessing"
INPUT, OUTPUT = "images", "descriptors"
OPSET = 17


def preprocessing(model: torch.nn.Module, size: int, checkpoint: str | Path | None = None) -> dict:
    """What an exported model expects and returns (JSON-ready)."""
    return {
        "input": {
            "name": INPUT,
            "shape": ["batch", 3, size, size],
            "dtype": "float32",
            "layout": "NCHW",
            "colour": "RGB",
            "resize": f"square {size}x{size}, antialiased (PIL/torchvision resize)",
            "scale": "x / 255",
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "formula": "(x / 255 - mean) / std, per channel",
        },
        "output": {
            "name": OUTPUT,
            "shape": ["batch", int(model.embedding_dim)],
            "dtype": "float32",
            "l2_normalised": True,
            "similarity": "inner product (cosine)",
        },
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "weights_sha1": state_fingerprint(model),
    }


def _example(size: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


@contextlib.contextmanager
def _jit_without_deprecation_warnings():
    """torch ≥ 2.9 deprecates torch.jit (FutureWarning on trace, trace_method, save and load) in favour of
    torch.export; TorchScript stays the format of this export (loadable by libtorch without Python), so these
    notices are silenced here, around isc's own calls, and nowhere else."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        yield


def _write_sidecar(path: Path, meta: dict) -> None:
    path.with_name(path.name + ".json").write_text(json.dumps(meta, indent=2))


def export_torchscript(model: torch.nn.Module, path: str | Path, size: int, meta: dict) -> Path:
    """Trace `model` (eval mode) at S = `size` and save it with `meta` inside and beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    with torch.no_grad(), _jit_without_deprecation_warnings():
        traced = torch.jit.trace(model, _example(size), check_trace=False)  # checked by the caller (isc-export)
        torch.jit.save(traced, str(path), _extra_files={f"{METADATA_KEY}.json": json.dumps(meta)})
    _write_sidecar(path, meta)
    return path


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, dict]:
    extra = {f"{METADATA_KEY}.json": ""}
    with _jit_without_deprecation_warnings():
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return module.eval(), json.loads(extra[f"{METADATA_KEY}.json"] or "{}")


def export_onnx(model: torch.nn.Module, path: str | Path, size: int, meta: dict, opset: int = OPSET) -> Path:
    """Export `model` to ONNX (batch axis dynamic) with `meta` in its metadata_props and beside it."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            model.eval(),
            (_example(size),),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
        )
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(meta)})
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    _write_sidecar(path, meta)
    return path


def load_onnx(path: str | Path, threads: int | None = None):
    """(onnxruntime CPU session, metadata) of an exported file; `threads` sets the intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    return session, json.loads(props.get(METADATA_KEY, "{}"))


def onnx_descriptors(session, images: torch.Tensor | np.ndarray) -> np.ndarray:
    x = images.numpy() if isinstance(images, torch.Tensor) else images
    return session.run([OUTPUT], {INPUT: np.ascontiguousarray(x, dtype=np.float32)})[0]
