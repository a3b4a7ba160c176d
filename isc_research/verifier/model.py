"""PairClassifier: a timm backbone with its own pooling and a one-logit head ("copy" vs "not a copy")."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from isc_research.model import create_backbone


class PairClassifier(nn.Module):
    """Side-by-side pair images (B, 3, S, S) → copy logits (B,). "separate" uses ViT-L/16@224 with one output
    logit (RECIPES §6); any timm model works, `global_pool` is the model's own (avg for CNNs, token for ViTs)."""

    def __init__(
        self,
        backbone: str,
        pretrained: bool = False,
        weights_file: str | None = None,
        backbone_kwargs: dict | None = None,
        global_pool: str = "avg",
    ):
        super().__init__()
        self.backbone = create_backbone(backbone, pretrained, weights_file, backbone_kwargs)
        self.backbone.reset_classifier(1, global_pool=global_pool)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        return self.backbone(pairs).squeeze(-1)

    def head_parameter_names(self) -> set[str]:
        """Names (in this module's state dict) of the classifier head's parameters."""
        head = self.backbone.get_classifier()
        ids = {id(p) for p in head.parameters()}
        return {name for name, p in self.named_parameters() if id(p) in ids}


def load_backbone_weights(model: PairClassifier, checkpoint: str | Path) -> None:
    """Start the verifier's backbone from the backbone of an isc-train (descriptor) checkpoint: every weight
    but the new one-logit head must be found there, with the same shape."""
    from isc_research.checkpoints import init_from_weights

    path = Path(checkpoint).expanduser()
    weights = init_from_weights(path, "model.backbone.")
    own = model.state_dict()
    head = model.head_parameter_names()
    mismatched = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in weights.items()
        if k in own and v.shape != own[k].shape
    ]
    missing = sorted(set(own) - set(weights) - head)
    if mismatched or missing:
        raise ValueError(
            f"init_from={str(path)!r}: its backbone does not fit backbone.name of this run "
            f"(shape mismatches {mismatched[:3]}, missing {missing[:3]}); train the verifier with "
            "the descriptor checkpoint's backbone, or set init_from=null"
        )
    model.load_state_dict({k: v for k, v in weights.items() if k in own}, strict=False)
