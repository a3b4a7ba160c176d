"""Baseline policies: SimCLR's and the identity, plus the evaluation resize."""

from __future__ import annotations

from torchvision.transforms import v2 as T
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _to_normalised_tensor() -> list:
    return [T.PILToTensor(), T.ToDtype(torch.float32, scale=True), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def eval_transform(size: int) -> T.Compose:
    """Square resize without keeping the aspect ratio (lyakaap's inference, RECIPES §2.4)."""
    return T.Compose([T.Resize((size, size), antialias=True), *_to_normalised_tensor()])


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
    kernel = 2 * (size // 20) + 1  # ~10 % of the image side, odd, as in SimCLR
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=tuple(crop_scale), antialias=True),
            T.RandomHorizontalFlip(flip_p),
            T.RandomApply([T.ColorJitter(*jitter)], p=jitter_p),
            T.RandomGrayscale(grayscale_p),
            T.RandomApply([T.GaussianBlur(kernel, sigma=tuple(blur_sigma))], p=blur_p),
            *_to_normalised_tensor(),
        ]
    )
