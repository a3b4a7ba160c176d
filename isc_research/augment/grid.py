"""Picture of a policy: N training images × K draws of their views, as one PNG grid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from isc_research.assets import load_font
from isc_research.augment.policies import IMAGENET_MEAN, IMAGENET_STD
from isc_research.data.datasets import TrainingViews
from isc_research.images import load_image

_LABEL_HEIGHT = 22


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """Undo the ImageNet normalisation of a (3, H, W) view."""
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    rgb = (tensor.float() * std + mean).clamp(0, 1).mul(255).round().byte()
    return Image.fromarray(rgb.permute(1, 2, 0).numpy())


def policy_grid(
    dataset: TrainingViews, indices: Sequence[int], draws: int, cell: int = 160, title: str = "", seed: int = 0
) -> Image.Image:
    """One row per training image: the original, then `draws` draws of the policy, each showing every view."""
    torch.manual_seed(seed)
    n_views = len(dataset.views)
    columns = ["original"] + [f"draw {d + 1} · view {v + 1}" for d in range(draws) for v in range(n_views)]
    top = _LABEL_HEIGHT * (2 if title else 1)
    grid = Image.new("RGB", (cell * len(columns), top + cell * len(indices)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    font = load_font(None, 13)
    if title:
        draw.text((4, 4), title, fill=(0, 0, 0), font=font)
    for c, label in enumerate(columns):
        draw.text((c * cell + 4, top - _LABEL_HEIGHT + 4), label, fill=(0, 0, 0), font=font)
    for r, index in enumerate(indices):
        y = top + r * cell
        original = load_image(dataset.records[index].path, draft_size=dataset.draft_size)
        original.thumbnail((cell - 4, cell - 4))
        grid.paste(original, ((cell - original.width) // 2, y + (cell - original.height) // 2))
        for d in range(draws):
            sample = dataset[index]
            if sample is None:
                continue
            for v, view in enumerate(sample["views"]):
                image = tensor_to_image(view).resize((cell - 4, cell - 4), Image.BILINEAR)
                grid.paste(image, ((1 + d * n_views + v) * cell + 2, y + 2))
    return grid


def evenly_spaced(n_items: int, n: int) -> list[int]:
    return sorted({int(i) for i in np.linspace(0, n_items - 1, min(n, n_items))})


def save_new(image: Image.Image, path: Path) -> Path:
    """Write a PNG; never overwrite an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        raise FileExistsError(f"{path} exists; choose another show.out or remove it")
    image.save(path)
    return path
