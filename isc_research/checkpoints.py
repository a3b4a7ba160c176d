"""Reading checkpoints: any isc Lightning checkpoint (with an error that names a damaged or foreign file), the
descriptor model of an isc-train checkpoint, and the weights under a prefix for `init_from` (every tool's)."""

from __future__ import annotations

from pathlib import Path

import torch

from isc_research.model import DescriptorModel


def load_lightning_checkpoint(path: Path, what: str = "ckpt_path") -> dict:
    """torch.load of an isc-train (Lightning) checkpoint, with an error that names the file when it is not one or
    is truncated."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for damaged files
        raise ValueError(
            f"{what}={str(path)!r} is not a readable checkpoint: truncated or damaged, or not a "
            f"checkpoint at all ({type(error).__name__}: {' '.join(str(error).split())[:200]}); give "
            "another checkpoint, or delete a damaged last.ckpt to start the run over"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(
            f"{what}={str(path)!r} is not an isc-train checkpoint (no 'state_dict'); give a "
            "<run>/checkpoints/*.ckpt file"
        )
    return checkpoint


def init_from_weights(path: Path, prefix: str, tool: str = "isc-train") -> dict:
    """The weights under `prefix` of the `tool` checkpoint named by `init_from`, with "model." stripped;
    a missing file or a file that is not a Lightning checkpoint is an error that says what to give."""
    if not path.is_file():
        raise FileNotFoundError(
            f"init_from={str(path)!r} does not exist; give an {tool} checkpoint (e.g. the "
            "previous stage's <run>/checkpoints/last.ckpt) or init_from=null"
        )
    state = torch.load(path, map_location="cpu", weights_only=False).get("state_dict")
    if state is None:
        raise ValueError(f"init_from={str(path)!r} is not an {tool} checkpoint (no 'state_dict')")
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith(prefix)}


def load_checkpoint(path: str | Path) -> tuple[DescriptorModel, dict]:
    """The descriptor model of an isc-train checkpoint, and the run config stored in it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={str(path)!r} does not exist (isc-train writes <run>/checkpoints/*.ckpt).")
    checkpoint = load_lightning_checkpoint(path)  # a damaged or foreign file: an error that names it
    hparams = checkpoint.get("hyper_parameters", {})
    if "model" not in hparams:
        raise ValueError(f"{path} is not an isc-train checkpoint: it has no hyper_parameters.model entry.")
    arguments = dict(hparams["model"], pretrained=False, weights_file=None)  # the weights come from the checkpoint
    model = DescriptorModel(**arguments)
    state = {k[len("model.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    return model.eval(), hparams.get("config", {})
