"""PairwiseVerifier: scores (query, candidate) image pairs with a trained isc-train-verifier checkpoint.

Calling convention shared with isc-match's other verifiers: `score_pairs(queries, references)` takes two
equally long lists of PIL images and returns one float per pair (here the probability of a copy, higher =
copy), and `name` says which verifier produced the scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from isc_research.scaling import resolve_device
from isc_research.verifier.inputs import PairInput
from isc_research.verifier.model import PairClassifier


class PairwiseVerifier:
    """A PairClassifier in evaluation mode, with the pair input it was trained on."""

    def __init__(
        self,
        model: PairClassifier,
        pair_size: int,
        device: str | torch.device = "auto",
        batch_size: int = 64,
        name: str = "pairwise",
    ):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.model = model.eval().to(self.device)
        self.input = PairInput(pair_size)
        self.batch_size = int(batch_size)
        self.name = name

    @classmethod
    def from_checkpoint(cls, ckpt_path: str | Path, device: str = "auto", batch_size: int = 64) -> PairwiseVerifier:
        """Rebuild the verifier from an isc-train-verifier checkpoint (it carries the model and pair size)."""
        path = Path(ckpt_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"verifier ckpt_path={str(path)!r} does not exist (isc-train-verifier writes <run>/checkpoints/*.ckpt)"
            )
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        hparams = checkpoint.get("hyper_parameters", {})
        if "model" not in hparams or "pair_size" not in hparams:
            raise ValueError(
                f"{path} is not an isc-train-verifier checkpoint (no hyper_parameters.model / "
                "pair_size); descriptor checkpoints of isc-train go to isc-match's ckpt_path instead"
            )
        model = PairClassifier(**dict(hparams["model"], pretrained=False, weights_file=None))
        state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
        model.load_state_dict(state)
        return cls(
            model,
            hparams["pair_size"],
            device=device,
            batch_size=batch_size,
            name=f"pairwise:{hparams['model']['backbone']}",
        )

    @torch.no_grad()
    def score_pairs(self, queries: list[Image.Image], references: list[Image.Image]) -> np.ndarray:
        """Probability that references[i] is copied in queries[i], for every i (float64, in [0, 1])."""
        if len(queries) != len(references):
            raise ValueError(
                f"score_pairs needs as many references as queries, got {len(queries)} and {len(references)}"
            )
        scores = np.empty(len(queries), np.float64)
        for start in range(0, len(queries), self.batch_size):
            stop = min(start + self.batch_size, len(queries))
            batch = torch.stack([self.input(q, r) for q, r in zip(queries[start:stop], references[start:stop])])
            scores[start:stop] = torch.sigmoid(self.model(batch.to(self.device)).float()).cpu().numpy()
        return scores
