"""Building blocks of the recipe policies: an op is `op(image, rng, ctx) -> image` on PIL RGB images, with a
numpy Generator for every random choice and a `Context` that hands out other training images. `Maybe`,
`OneOf`, `RandomOrder` and `Sequential` combine ops; `PolicyView` turns a list of ops into one training view
(PIL image → normalised float tensor). All classes are picklable, so views travel to DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2 as T

from isc_research.augment.policies import _to_normalised_tensor
from isc_research.images import fit_long_side, to_rgb


@dataclass
class Context:
    """Per-call state of a view: `other()` returns a random other training image (overlays)."""

    other: Callable[[], Image.Image] | None = None
    flags: set[str] = field(default_factory=set)  # e.g. "overlaid", so that a later step can skip itself

    def other_image(self) -> Image.Image:
        if self.other is None:
            raise ValueError(
                "this augmentation overlays other training images: call the view as "
                "view(image, other=callable returning a PIL image) (TrainingViews does)"
            )
        return to_rgb(self.other())


class Op(Protocol):
    def __call__(self, img: Image.Image, rng: np.random.Generator, ctx: Context) -> Image.Image: ...


class Maybe:
    """Apply `op` with probability `p`."""

    def __init__(self, p: float, op: Op):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {p} for {_name(op)}")
        self.p, self.op = p, op

    def __call__(self, img, rng, ctx):
        return self.op(img, rng, ctx) if self.p > 0 and rng.random() < self.p else img

    def children(self) -> list[Op]:
        return [self.op]


class OneOf:
    """Apply one of `ops`, drawn uniformly (or with `weights`)."""

    def __init__(self, ops: Sequence[Op], weights: Sequence[float] | None = None):
        self.ops = list(ops)
        w = np.ones(len(self.ops)) if weights is None else np.asarray(weights, dtype=float)
        self.p = w / w.sum()

    def __call__(self, img, rng, ctx):
        return self.ops[int(rng.choice(len(self.ops), p=self.p))](img, rng, ctx)

    def children(self) -> list[Op]:
        return self.ops


class Sequential:
    """Apply `ops` in order."""

    def __init__(self, ops: Sequence[Op]):
        self.ops = list(ops)

    def __call__(self, img, rng, ctx):
        for op in self.ops:
            img = op(img, rng, ctx)
        return img

    def children(self) -> list[Op]:
        return self.ops


class RandomOrder(Sequential):
    """Apply every op of `ops` once, in a random order (lyakaap's list, RECIPES §2.3)."""

    def __call__(self, img, rng, ctx):
        for i in rng.permutation(len(self.ops)):
            img = self.ops[int(i)](img, rng, ctx)
        return img


def walk(ops: Sequence[Op]) -> Iterator[Op]:
    """Every op, depth first, including the ones inside combinators."""
    for op in ops:
        yield op
        yield from walk(getattr(op, "children", lambda: [])())


class PolicyView:
    """One training view: shrink the image to `work_side` (long side; None keeps it), run `ops`, resize to
    size×size (unless an op already did), convert to a normalised tensor and run `tensor_ops`.

    Randomness: a numpy Generator seeded from torch's RNG on every call, so a view follows torch's seeding
    (torch.manual_seed, DataLoader worker seeds) and is reproducible under a seed.
    """

    def __init__(
        self,
        ops: Sequence[Op],
        size: int,
        work_side: int | None = None,
        tensor_ops: Sequence[Callable[[torch.Tensor], torch.Tensor]] = (),
    ):
        self.ops = Sequential(ops)
        self.size = size
        self.work_side = work_side
        self.to_tensor = T.Compose(_to_normalised_tensor())
        self.tensor_ops = T.Compose(list(tensor_ops)) if tensor_ops else None
        self.needs_other_images = any(_needs_other_images(op) for op in walk(ops))

    def __call__(self, image: Image.Image, other: Callable[[], Image.Image] | None = None) -> torch.Tensor:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
        img = self.augment(image, rng, Context(other))
        tensor = self.to_tensor(img)
        return self.tensor_ops(tensor) if self.tensor_ops is not None else tensor

    def augment(self, image: Image.Image, rng: np.random.Generator, ctx: Context) -> Image.Image:
        """The PIL part: RGB, shrink, ops, final square resize."""
        img = to_rgb(image)
        if min(img.size) < 2:  # a 1-pixel strip: make it 2 px thick so every op has an inside
            img = img.resize((max(2, img.width), max(2, img.height)), Image.NEAREST)
        if self.work_side is not None:
            img = _shrink(img, self.work_side)
        img = self.ops(img, rng, ctx)
        if img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), Image.BILINEAR)
        return img


_last_shrink: tuple | None = None  # (source, side, shrunk): the views of one sample share a single resize


def _shrink(img: Image.Image, side: int) -> Image.Image:
    """`img` with its long side at most `side`, left alone when within 25 % of it (a small shrink costs more
    than it saves). The ops never modify their input in place, so the views of one sample share the result."""
    global _last_shrink
    if max(img.size) <= 1.25 * side:
        return img
    if _last_shrink is not None and _last_shrink[0] is img and _last_shrink[1] == side:
        return _last_shrink[2]
    out = fit_long_side(img, side, Image.BILINEAR, reducing_gap=2.0)
    _last_shrink = (img, side, out)
    return out


def _needs_other_images(op) -> bool:
    """Whether an op (or the function inside a functools.partial) draws other training images."""
    return bool(
        getattr(op, "needs_other_images", False) or getattr(getattr(op, "func", None), "needs_other_images", False)
    )


def _name(op) -> str:
    return getattr(op, "__name__", None) or getattr(getattr(op, "func", None), "__name__", None) or type(op).__name__
