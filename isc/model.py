"""Descriptor model: timm backbone → GeM pooling → linear projection → L2 normalisation."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn


class GeM(nn.Module):
    """Generalised-mean pooling over the spatial dimensions; p=1 is average pooling, p→∞ max pooling."""

    def __init__(self, p: float = 3.0, learnable: bool = False, eps: float = 1e-6):
        super().__init__()
        if p <= 0:
            raise ValueError(f"GeM p must be > 0, got {p}")
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learnable)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C)
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1)).pow(1.0 / self.p)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.3f}, learnable={self.p.requires_grad}"


def create_backbone(name: str, pretrained: bool = False, weights_file: str | None = None) -> nn.Module:
    """A timm model without classifier and pooling; weights from the hub or from a local file."""
    kwargs: dict = {"num_classes": 0, "global_pool": ""}
    if weights_file:
        path = Path(weights_file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"backbone.weights_file={weights_file!r} does not exist. Give the path of a timm/PyTorch "
                f"state dict (.pth/.bin/.safetensors) for {name!r}, or set backbone.weights_file=null."
            )
        # timm's own mechanism for local weights: the pretrained config points at the file.
        kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
        pretrained = True
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except RuntimeError as error:
        if name not in timm.list_models(pretrained=False):
            raise ValueError(f"backbone.name={name!r} is not a timm model (see timm.list_models()).") from error
        raise
    except Exception as error:  # hub unreachable, missing weights
        if pretrained and not weights_file:
            raise RuntimeError(
                f"Could not download pretrained weights for {name!r} ({error}). Without internet, put the "
                f"weights in a local file and set backbone.weights_file=/path/to/weights, or set "
                f"backbone.pretrained=false."
            ) from error
        raise


class DescriptorModel(nn.Module):
    """Maps images (B, 3, H, W) to L2-normalised descriptors (B, embedding_dim)."""

    def __init__(
        self,
        backbone: str,
        embedding_dim: int = 256,
        pretrained: bool = False,
        weights_file: str | None = None,
        gem_p: float = 3.0,
        gem_learnable: bool = False,
    ):
        super().__init__()
        self.backbone = create_backbone(backbone, pretrained, weights_file)
        self.pool = GeM(gem_p, gem_learnable)
        self.projection = nn.Linear(self.backbone.num_features, embedding_dim)
        self.embedding_dim = embedding_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone.forward_features(images)
        if features.ndim == 3:  # transformers give (B, tokens, C): pool over tokens as a 1×N map
            features = features.transpose(1, 2).unsqueeze(-1)
        return F.normalize(self.projection(self.pool(features)), dim=-1)
