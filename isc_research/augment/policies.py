"""Baseline policies: SimCLR's and the identity, plus the evaluation resize."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2 as T

from isc_research.images import to_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ToNormalisedTensor:
    """PIL RGB image (or uint8 CHW tensor) → float32 (3, H, W) normalised with the ImageNet statistics:
    x / 255 − mean) / std as one multiply and one subtract in place (torchvision's ToDtype + Normalize
    make three passes)."""

    def __init__(self):
        std = torch.tensor(IMAGENET_STD)[:, None, None]
        self.scale = 1.0 / (255.0 * std)
        self.shift = torch.tensor(IMAGENET_MEAN)[:, None, None] / std

    def __call__(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        if isinstance(image, Image.Image):
            image = torch.from_numpy(np.array(image.convert("RGB") if image.mode != "RGB" else image)).permute(2, 0, 1)
        return image.to(torch.float32).contiguous().mul_(self.scale).sub_(self.shift)


class ToRGB:
    """Any PIL image (grayscale, palette, RGBA, 16-bit, CMYK) → 8-bit RGB, as isc_research.images.to_rgb."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return to_rgb(image)


class GaussianBlur:
    """SimCLR's Gaussian blur, σ uniform in `sigma` (torch's RNG), as one separable OpenCV filter over ±3σ.
    torchvision's GaussianBlur convolves with the full 2-D kernel (SimCLR's 10 % of the side: 51×51 taps at
    512 px, ~2 s per image on this CPU)."""

    def __init__(self, sigma: tuple[float, float]):
        self.sigma = sigma

    def __call__(self, image: Image.Image) -> Image.Image:
        from isc_research.augment.ops import gaussian_blur_sigma

        return gaussian_blur_sigma(image, float(torch.empty(()).uniform_(*self.sigma)))


def _to_normalised_tensor() -> list:
    return [ToNormalisedTensor()]


def eval_transform(size: int) -> T.Compose:
    """Square resize without keeping the aspect ratio (lyakaap's inference, RECIPES §2.4)."""
    return T.Compose([ToRGB(), T.Resize((size, size), antialias=True), *_to_normalised_tensor()])


def none(size: int) -> T.Compose:
    """No augmentation: both views are the resized image (a sanity baseline; the loss cannot improve)."""
    return eval_transform(size)


def simclr(
    size: int,
    crop_scale: tuple[float, float] = (0.08, 1.0),
    flip_p: float = 0.5,
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
    jitter_p: float = 0.8,
    grayscale_p: float = 0.2,
    blur_p: float = 0.5,
    blur_sigma: tuple[float, float] = (0.1, 2.0),
) -> T.Compose:
    """SimCLR (Chen et al. 2020): random resized crop, flip, colour jitter, grayscale, Gaussian blur."""
    return T.Compose(
        [
            ToRGB(),
            T.RandomResizedCrop(size, scale=tuple(crop_scale), antialias=True),
            T.RandomHorizontalFlip(flip_p),
            T.RandomApply([T.ColorJitter(*jitter)], p=jitter_p),
            T.RandomGrayscale(grayscale_p),
            T.RandomApply([GaussianBlur(tuple(blur_sigma))], p=blur_p),
            *_to_normalised_tensor(),
        ]
    )
