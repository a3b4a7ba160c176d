"""Torch datasets over image records: augmented training views, and plain images for evaluation."""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

from isc_research.data.records import ImageRecord
from isc_research.data.sampling import ClassStage
from isc_research.images import ImageLoadError, image_size, load_image

log = logging.getLogger(__name__)


def random_readable_image(
    records: Sequence[ImageRecord], draft_size: int | None, what: str, give_up: str
) -> tuple[Image.Image, int]:
    """A random record's image and its index, drawn with torch's RNG (seeded per worker); an unreadable image is
    logged as a skipped `what` and another is drawn, up to 10 times, then ImageLoadError(`give_up`)."""
    for _ in range(10):
        index = int(torch.randint(len(records), ()))
        try:
            return load_image(records[index].path, draft_size=draft_size), index
        except ImageLoadError as error:
            log.warning("skipping %s: %s", what, error)
    raise ImageLoadError(give_up)


class TrainingViews(Dataset):
    """`n_views` augmentations of one training image, labelled with the image's index (its instance class).

    `transform` is one policy for every view or a tuple with one per view (see isc_research.augment). Views that
    overlay other images get them from this dataset. An unreadable image yields None and is dropped (and
    counted) by `collate_skipping`.

    `extra` (data.extra_classes, S-square's ImageNet classes, RECIPES §3.1) are more images, each its own
    class after the training images. Indexed by (position, ClassStage) (ArcFace drip training, through
    `SeededSamples`), position p is training image p below `stage.classes` and extra image p − classes
    above, labelled p; a stage's `intensity` rebuilds the policy with `policy(intensity=…)` (the
    augmentation config as a partial; built once per intensity in each worker).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        transform: Callable | Sequence[Callable],
        n_views: int = 2,
        draft_size: int | None = None,
        extra: Sequence[ImageRecord] = (),
        policy: Callable[..., Callable | Sequence[Callable]] | None = None,
    ):
        if n_views < 2:
            raise ValueError(f"n_views must be >= 2 for instance discrimination, got {n_views}")
        self.n_views = n_views
        self.records = list(records)
        self.extra = list(extra)
        self.views = self._views(transform)
        self.draft_size = draft_size
        self.policy = policy
        self._views_at: dict[float, list[Callable]] = {}

    def _views(self, transform) -> list[Callable]:
        views = list(transform) if isinstance(transform, (tuple, list)) else [transform] * self.n_views
        if len(views) != self.n_views:
            raise ValueError(f"the augmentation policy defines {len(views)} views but data.n_views={self.n_views}")
        return views

    def views_at(self, intensity: float | None) -> list[Callable]:
        """The views of the policy at `intensity` (None: as configured)."""
        if intensity is None:
            return self.views
        if intensity not in self._views_at:
            if self.policy is None:
                raise ValueError(
                    "a training stage sets an augmentation intensity, but the dataset was given no "
                    "policy builder to apply it"
                )
            self._views_at[intensity] = self._views(self.policy(intensity=intensity))
        return self._views_at[intensity]

    def __len__(self) -> int:
        return len(self.records) + len(self.extra)

    def other_image(self) -> Image.Image:
        """A random readable training image (for overlay augmentations); torch's RNG, so seeded per worker."""
        return random_readable_image(
            self.records,
            self.draft_size,
            "training image (as overlay)",
            "10 random training images in a row were unreadable; check the training folder",
        )[0]

    def __getitem__(self, key: int | tuple[int, ClassStage]) -> dict | None:
        if isinstance(key, tuple):
            position, stage = key
            record = self.records[position] if position < stage.classes else self.extra[position - stage.classes]
            views = self.views_at(stage.intensity)
        else:
            position, views = key, self.views
            record = self.records[key] if key < len(self.records) else self.extra[key - len(self.records)]
        try:
            image = load_image(record.path, draft_size=self.draft_size)
        except ImageLoadError as error:
            log.warning("skipping training image: %s", error)
            return None
        views = [
            view(image, other=self.other_image) if getattr(view, "needs_other_images", False) else view(image)
            for view in views
        ]
        return {"views": torch.stack(views), "label": position}


class ExtraNegatives(Dataset):
    """Adds `negatives` (n, 3, H, W) and `negative_label` (n,) to every sample of `dataset`: random images of
    `pool` (lyakaap stage 3: reference images, no augmentation, RECIPES §2.2) whose labels, `label_offset` +
    pool index, never equal a training label. Unreadable pool images are replaced by other random ones."""

    def __init__(
        self,
        dataset: Dataset,
        pool: Sequence[ImageRecord],
        n: int,
        transform: Callable,
        label_offset: int,
        draft_size: int | None = None,
    ):
        if n < 1:
            raise ValueError(f"data.extra_negatives must be >= 1 here, got {n}")
        if not pool:
            raise ValueError("no images to draw extra negatives from")
        self.dataset, self.pool, self.n = dataset, list(pool), n
        self.transform, self.label_offset, self.draft_size = transform, label_offset, draft_size

    def __len__(self) -> int:
        return len(self.dataset)

    def _draw(self) -> tuple[torch.Tensor, int]:
        image, index = random_readable_image(
            self.pool,
            self.draft_size,
            "extra negative",
            "10 random extra-negative images in a row were unreadable; check the reference folder",
        )
        return self.transform(image), index

    def __getitem__(self, index: int) -> dict | None:
        sample = self.dataset[index]
        if sample is None:
            return None
        images, indices = zip(*(self._draw() for _ in range(self.n)))
        return {
            **sample,
            "negatives": torch.stack(images),
            "negative_label": torch.tensor(indices, dtype=torch.long) + self.label_offset,
        }


class GroundTruthPairs(Dataset):
    """(query, reference) ground-truth pairs as two views of one instance, label = pair index (lyakaap stage 4
    fine-tunes on them without augmentation, RECIPES §2.2)."""

    def __init__(
        self, pairs: Sequence[tuple[ImageRecord, ImageRecord]], transform: Callable, draft_size: int | None = None
    ):
        self.pairs, self.transform, self.draft_size = list(pairs), transform, draft_size

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict | None:
        try:
            images = [load_image(record.path, draft_size=self.draft_size) for record in self.pairs[index]]
        except ImageLoadError as error:
            log.warning("skipping ground-truth pair: %s", error)
            return None
        return {"views": torch.stack([self.transform(image) for image in images]), "label": index}


class EvalImages(Dataset):
    """Query/reference images for descriptor extraction; `index` points back into `records`. `aspects`: per
    record, the aspect ratio its views get (`isc_research.extract.aspect_buckets`; None: the image's own), passed to the
    transform as `aspect=`."""

    def __init__(
        self,
        records: Sequence[ImageRecord],
        transform: Callable,
        skip_bad_images: bool = False,
        draft_size: int | None = None,
        aspects: Sequence[float | None] | None = None,
    ):
        self.records = list(records)
        self.transform = transform
        self.skip_bad_images = skip_bad_images
        self.draft_size = draft_size
        self.aspects = None if aspects is None else list(aspects)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict | None:
        record = self.records[index]
        try:
            image = load_image(record.path, draft_size=self.draft_size)
        except ImageLoadError as error:
            if not self.skip_bad_images:
                raise ImageLoadError(
                    f"{error} (to skip and count such images set data.skip_bad_eval_images=true "
                    f"for isc-train, eval.skip_bad_images=true for isc-eval)"
                ) from error
            log.warning("skipping %s image: %s", record.split, error)
            return None
        if record.crop is not None:
            image = crop_fraction(image, record.crop)
        if self.aspects is None or self.aspects[index] is None:
            return {"image": self.transform(image), "index": index}
        return {"image": self.transform(image, aspect=self.aspects[index]), "index": index}


def crop_box(width: int, height: int, crop: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """The pixel box (x0, y0, x1, y1) of the part `crop` (fractions of the width and height; at least one pixel)."""
    x0, y0 = min(width - 1, int(crop[0] * width)), min(height - 1, int(crop[1] * height))
    return x0, y0, max(x0 + 1, round(crop[2] * width)), max(y0 + 1, round(crop[3] * height))


def crop_fraction(image: Image.Image, crop: tuple[float, float, float, float]) -> Image.Image:
    """The part (x0, y0, x1, y1), in fractions of the width and height, of `image` (at least one pixel)."""
    return image.crop(crop_box(*image.size, crop))


class ImageSizes(Dataset):
    """(width, height) of each record's image as `EvalImages` will hand it to the transform (draft decoding and
    crop included), from the file headers only; (0, 0) for an unreadable header (the extraction reports it)."""

    def __init__(self, records: Sequence[ImageRecord], draft_size: int | None = None):
        self.records, self.draft_size = list(records), draft_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[int, int]:
        record = self.records[index]
        try:
            w, h = image_size(record.path, self.draft_size)
        except ImageLoadError:
            return 0, 0
        if record.crop is not None:
            x0, y0, x1, y1 = crop_box(w, h, record.crop)
            w, h = x1 - x0, y1 - y0
        return w, h


def collate_skipping(batch: list[dict | None]) -> dict:
    """Collate the readable samples; `skipped` counts the unreadable ones."""
    kept = [sample for sample in batch if sample is not None]
    out = default_collate(kept) if kept else {}
    out["skipped"] = len(batch) - len(kept)
    return out
