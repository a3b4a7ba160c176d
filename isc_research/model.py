"""Descriptor model: timm backbone → GeM pooling → linear projection → L2 normalisation."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from isc_research.precision import at_least_float32, autocast_off


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


def set_last_stride(backbone: nn.Module, stride: int) -> None:
    """Set the stride of a ResNet's last stage (`layer4`) — 1 doubles the final feature map (VisionForce, D²LV,
    RECIPES §4–5). Only ResNet-family timm models have `layer4`."""
    stage = getattr(backbone, "layer4", None)
    if stage is None:
        raise ValueError(
            f"backbone.last_stride needs a ResNet-style timm model with a `layer4` stage; "
            f"{type(backbone).__name__} has none (use last_stride: null)"
        )
    block = stage[0]
    for conv in (getattr(block, "conv2", None), getattr(block, "conv1", None)):
        if isinstance(conv, nn.Conv2d) and conv.stride != (1, 1):
            conv.stride = (stride, stride)
            break
    downsample = getattr(block, "downsample", None)
    for layer in downsample.modules() if downsample is not None else ():
        if isinstance(layer, nn.Conv2d) and layer.stride != (1, 1):
            layer.stride = (stride, stride)
        elif isinstance(layer, nn.AvgPool2d) and layer.stride != 1:  # timm's avg_down variants
            layer.stride, layer.kernel_size = stride, stride


class WaveBlock(nn.Module):
    """VisionForce's WaveBlock (RECIPES §4): in training, a random horizontal band of `band` × height keeps its
    values and the rest of the feature map is multiplied by `factor`; identity at evaluation."""

    def __init__(self, band: float = 0.3, factor: float = 1.5):
        super().__init__()
        self.band, self.factor = band, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        h = x.shape[-2]
        rows = max(1, round(h * self.band))
        start = int(torch.randint(0, h - rows + 1, ()))
        mask = torch.full((h, 1), self.factor, dtype=x.dtype, device=x.device)
        mask[start : start + rows] = 1.0
        return x * mask


def add_wave_blocks(backbone: nn.Module, stages: tuple[str, ...] = ("layer2", "layer3"), **kwargs) -> None:
    """Append a WaveBlock after each named stage of a ResNet-style backbone (VisionForce: layer2 and layer3)."""
    for name in stages:
        stage = getattr(backbone, name, None)
        if stage is None:
            raise ValueError(f"backbone.wave_block needs a ResNet-style timm model with a `{name}` stage")
        setattr(backbone, name, nn.Sequential(stage, WaveBlock(**kwargs)))


def create_backbone(
    name: str, pretrained: bool = False, weights_file: str | None = None, timm_kwargs: dict | None = None
) -> nn.Module:
    """A timm model without classifier and pooling; weights from the hub or from a local file; `timm_kwargs`
    go to timm.create_model (e.g. dynamic_img_size=True for a ViT at another resolution)."""
    kwargs: dict = {**(timm_kwargs or {}), "num_classes": 0, "global_pool": ""}
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


_MEAN = torch.tensor((0.485, 0.456, 0.406))[:, None, None]
_STD = torch.tensor((0.229, 0.224, 0.225))[:, None, None]
_LUMA = torch.tensor((0.299, 0.587, 0.114))[:, None, None]


def to_grayscale(images: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised RGB (B, 3, H, W) → the same image in grey (ITU-R 601 luma), normalised again: every
    input of "separate"'s all-grayscale retriever (RECIPES §6) and of D²LV's BW models (§5.3)."""
    mean, std, luma = (t.to(images.device, images.dtype) for t in (_MEAN, _STD, _LUMA))
    grey = ((images * std + mean) * luma).sum(dim=1, keepdim=True)
    return (grey - mean) / std


NECKS = ("linear", "linear_nobias", "linear_bn")
HEADS = ("visionforce", "d2lv")


def projector(in_features: int, hidden_dim: int, wide_dim: int) -> nn.Sequential:
    """VisionForce's projector (RECIPES §4): Linear → BN → LeakyReLU(0.2) → Linear → BN without a learned bias."""
    final_bn = nn.BatchNorm1d(wide_dim)
    final_bn.bias.requires_grad_(False)
    return nn.Sequential(
        nn.Linear(in_features, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden_dim, wide_dim),
        final_bn,
    )


class WideHead(nn.Module):
    """VisionForce's heads after GeM (RECIPES §4, §5.2; Test/models_balance_matrix/resnet.py): the projector
    GeM → 4096 → 8192, then for `visionforce` the "matrix" head BN(8192) → LeakyReLU → Linear 8192→256 → BN, whose
    output is the descriptor; for `d2lv` (no 256-d head) the 8,192-d projector output is the descriptor.
    `parts()` gives what the loss needs: the GeM feature (triplet), the projector output (wide CE) and, for
    `visionforce`, the 256-d BN output (its CE and the distillation)."""

    def __init__(self, kind: str, in_features: int, hidden_dim: int, wide_dim: int, embedding_dim: int):
        super().__init__()
        if kind not in HEADS:
            raise ValueError(f"model.head={kind!r} is unknown; use one of {HEADS} or null")
        if kind == "d2lv" and embedding_dim != wide_dim:
            raise ValueError(
                f"model.head=d2lv: the descriptor is the projector output, so model.embedding_dim "
                f"({embedding_dim}) must equal model.head_wide_dim ({wide_dim})"
            )
        self.kind = kind
        self.projector = projector(in_features, hidden_dim, wide_dim)
        self.matrix = (
            nn.Sequential(
                nn.BatchNorm1d(wide_dim),
                nn.LeakyReLU(0.2),
                nn.Linear(wide_dim, embedding_dim),
                nn.BatchNorm1d(embedding_dim),
            )
            if kind == "visionforce"
            else None
        )

    def parts(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        wide = self.projector(pooled)
        parts = {"pooled": pooled, "wide": wide}
        parts["head"] = self.matrix(wide) if self.matrix is not None else wide
        return parts

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.parts(pooled)["head"]


FEATURES = ("forward_features", "last_map")
POOLINGS = ("gem", "cls")
# model.flip_average: the flips (tensor dims reversed) whose descriptors are averaged with the image's at evaluation
FLIP_AVERAGES = {
    "none": (),
    "horizontal": ((-1,),),
    "horizontal_vertical": ((-1,), (-2,), (-2, -1)),  # the four flips: also the vertical mirror and the 180° turn
}


def make_neck(kind: str, in_features: int, embedding_dim: int) -> nn.Module:
    """The projection after pooling: `linear` (with bias; SSCD, S-square neck A), `linear_nobias` (S-square
    neck F), `linear_bn` (Linear without bias, Xavier-normal init, then BatchNorm1d: lyakaap, RECIPES §2.1)."""
    if kind == "linear":
        return nn.Linear(in_features, embedding_dim)
    if kind == "linear_nobias":
        return nn.Linear(in_features, embedding_dim, bias=False)
    if kind == "linear_bn":
        linear = nn.Linear(in_features, embedding_dim, bias=False)
        nn.init.xavier_normal_(linear.weight)
        return nn.Sequential(linear, nn.BatchNorm1d(embedding_dim))
    raise ValueError(f"model.neck={kind!r} is unknown; use one of {NECKS}")


class DescriptorModel(nn.Module):
    """Maps images (B, 3, H, W) to L2-normalised descriptors (B, embedding_dim): backbone → GeM → neck → L2.

    `gem_eval_p` (if set) replaces p at evaluation (lyakaap's --gem-eval-p); `last_stride` and `wave_block`
    modify ResNet backbones as VisionForce (RECIPES §4); `grayscale_input` greys every input first.
    `features`: `forward_features` (timm's, with any final conv head) or `last_map` — the last feature map of the
    stages, as timm's `features_only=True` gives it (lyakaap pools EfficientNetV2-M's 512-channel map, not the
    1,280 channels after conv_head, RECIPES §2.1). `pooling`: `gem`, or `cls` — a ViT's class token (the
    "separate" retriever, RECIPES §6). `flip_average`: at evaluation the descriptor is the L2-normalised sum of the
    descriptors of the image and its flips — `horizontal`: L2(d(x) + d(mirror of x)), lyakaap's flip TTA (RECIPES
    §2.4); `horizontal_vertical`: the four flips (x, its left-right and up-down mirrors, x turned 180°; source
    silent, measured on the mini-DISC); `none`: d(x). It is part of the descriptor, so that every consumer of the
    model — the in-loop metric, isc-eval, search, export — computes the same one; training is unchanged."""

    def __init__(
        self,
        backbone: str,
        embedding_dim: int = 256,
        pretrained: bool = False,
        weights_file: str | None = None,
        gem_p: float = 3.0,
        gem_learnable: bool = False,
        gem_eval_p: float | None = None,
        neck: str = "linear",
        last_stride: int | None = None,
        wave_block: bool = False,
        backbone_kwargs: dict | None = None,
        grayscale_input: bool = False,
        features: str = "forward_features",
        pooling: str = "gem",
        head: str | None = None,
        head_hidden_dim: int = 4096,
        head_wide_dim: int = 8192,
        flip_average: str = "none",
    ):
        super().__init__()
        if features not in FEATURES:
            raise ValueError(f"model.features={features!r} is unknown; use one of {FEATURES}")
        if pooling not in POOLINGS:
            raise ValueError(f"model.pooling={pooling!r} is unknown; use one of {POOLINGS}")
        if flip_average not in FLIP_AVERAGES:
            raise ValueError(f"model.flip_average={flip_average!r} is unknown; use one of {tuple(FLIP_AVERAGES)}")
        self.backbone = create_backbone(backbone, pretrained, weights_file, backbone_kwargs)
        self.features, self.pooling = features, pooling
        in_features = self.backbone.num_features
        if features == "last_map":
            if not hasattr(self.backbone, "forward_intermediates"):
                raise ValueError(f"model.features=last_map: timm's {backbone!r} has no forward_intermediates")
            in_features = self.backbone.feature_info[-1]["num_chs"]
            # what features_only=True builds: the stages only; the head after them is unused (and dropped so
            # that DDP sees no parameter without a gradient)
            self.backbone.prune_intermediate_layers(indices=1, prune_head=True, prune_norm=False)
        if last_stride is not None:
            set_last_stride(self.backbone, last_stride)
        if wave_block:
            add_wave_blocks(self.backbone)
        self.pool = GeM(gem_p, gem_learnable)
        self.gem_eval_p = gem_eval_p
        # `head` (VisionForce / D²LV) replaces the neck: GeM → projector (→ matrix head) → L2
        self.projection = (
            WideHead(head, in_features, head_hidden_dim, head_wide_dim, embedding_dim)
            if head
            else make_neck(neck, in_features, embedding_dim)
        )
        self.embedding_dim = embedding_dim
        self.grayscale_input = grayscale_input
        self.flip_average = flip_average

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        descriptor = self.descriptor(images)
        flips = () if self.training else FLIP_AVERAGES[self.flip_average]
        if flips:
            descriptor = descriptor + sum(self.descriptor(torch.flip(images, dims=dims)) for dims in flips)
            descriptor = F.normalize(descriptor, dim=-1)
        return descriptor

    def descriptor(self, images: torch.Tensor) -> torch.Tensor:
        """The L2-normalised descriptor of the images as they are (no flip averaging)."""
        pooled = self.pooled(images)
        with autocast_off(pooled):  # neck / head and L2 in float32 (see pooled)
            return F.normalize(self.projection(pooled), dim=-1)

    def forward_parts(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The descriptor plus what a loss on the intermediate features needs (model.head's `parts()`)."""
        if not isinstance(self.projection, WideHead):
            raise ValueError("forward_parts needs model.head (visionforce | d2lv)")
        pooled = self.pooled(images)
        with autocast_off(pooled):  # the head in float32 (see pooled)
            parts = self.projection.parts(pooled)
            return {**parts, "descriptor": F.normalize(parts["head"], dim=-1)}

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled feature before the neck / head: GeM over the feature map, or a ViT's class token."""
        if self.grayscale_input:
            images = to_grayscale(images)
        if self.features == "last_map":
            features = self.backbone.forward_intermediates(images, indices=1, intermediates_only=True)[-1]
        else:
            features = self.backbone.forward_features(images)
        if self.pooling == "cls":
            if features.ndim != 3:
                raise ValueError("model.pooling=cls needs a transformer backbone (tokens); this one gives feature maps")
            return at_least_float32(features[:, 0])
        if getattr(self.backbone, "output_fmt", "NCHW") == "NHWC" and features.ndim == 4:  # e.g. timm's Swin
            features = features.permute(0, 3, 1, 2)
        if features.ndim == 3:  # transformers give (B, tokens, C): pool over tokens as a 1×N map
            features = features.transpose(1, 2).unsqueeze(-1)
        # The head (pooling, neck, L2) in float32 on every device: under fp16 autocast GeM's power and mean, the
        # BatchNorm neck and the norm would otherwise follow each device's own autocast op lists (issue 15).
        with autocast_off(features):
            features = at_least_float32(features)
            if self.gem_eval_p is not None and not self.training:
                return (
                    features.clamp(min=self.pool.eps).pow(self.gem_eval_p).mean(dim=(-2, -1)).pow(1.0 / self.gem_eval_p)
                )
            return self.pool(features)
