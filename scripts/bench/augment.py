"""Augmentation throughput: training samples/s per worker for each policy at 224 and 512 px, against a
straightforward AugLy/torchvision implementation of the same ops (full-resolution decode, one library call
per op) run side by side in this process; then DataLoader scaling with W workers. Prints JSON.

    .venv/bin/python scripts/bench/augment.py [--images 48] [--sizes 224 512] [--quick]

Inputs: a mini-DISC training set built at 1024 px (long side) JPEGs, like DISC21's photos. A sample is one
training image turned into its two views (what TrainingViews yields).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader, RandomSampler
from torchvision import transforms as TV

import augly.image as imaugs
import augly.image.functional as AF

from isc import assets
from isc.augment import lyakaap, s_square, simclr, sscd_advanced, visionforce, copy_edits
from isc.augment.policies import IMAGENET_MEAN, IMAGENET_STD
from isc.data.datasets import TrainingViews, collate_skipping
from isc.data.mini_disc import MiniDiscSpec, build_mini_disc
from isc.data.records import ImageRecord

CONF = Path(__file__).resolve().parents[2] / "conf" / "augmentation"


def policy(name: str, size: int):
    """Build a policy from its YAML in conf/augmentation with data.train_size = size."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    cfg = OmegaConf.merge({"data": {"train_size": size}}, {"aug": cfg})
    kwargs = OmegaConf.to_container(cfg.aug, resolve=True)
    kwargs.pop("_target_"), kwargs.pop("_convert_", None)
    factory = {"lyakaap_v83": lyakaap, "lyakaap_v98": lyakaap, "sscd_advanced": sscd_advanced, "s_square": s_square,
               "visionforce": visionforce, "simclr": simclr, "copy_edits": copy_edits}[name]
    return factory(**kwargs)


# ------------------------------------------------------------------ baseline: AugLy + torchvision, as written


class _Normalise:
    def __init__(self):
        self.t = TV.Compose([TV.ToTensor(), TV.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __call__(self, img):
        return self.t(img)


def _augly_text(img, rng, lines, glyphs, size, x, y, opacity=(1.0, 1.0)):
    font = assets.pick(rng, assets.glyph_fonts())
    ok = assets.printable_glyphs(font)
    text = [[int(ok[int(i)]) for i in rng.integers(0, len(ok), int(rng.integers(glyphs[0], glyphs[1] + 1)))]
            for _ in range(int(rng.integers(lines[0], lines[1] + 1)))]
    return AF.overlay_text(img, text=text, font_file=font, font_size=float(rng.uniform(*size)),
                           opacity=float(rng.uniform(*opacity)), color=assets.colour(rng),
                           x_pos=float(rng.uniform(*x)), y_pos=float(rng.uniform(*y))).convert("RGB")


def _augly_emoji(img, rng, size, opacity):
    s = float(rng.uniform(*size))
    return AF.overlay_emoji(img, emoji_path=assets.pick(rng, assets.emoji_files()), emoji_size=s,
                            opacity=float(rng.uniform(*opacity)), x_pos=float(rng.uniform(0, 1 - s)),
                            y_pos=float(rng.uniform(0, 1 - s))).convert("RGB")


def _jpeg(img, q):
    return AF.encoding_quality(img, quality=int(q))


class NaiveLyakaapV98:
    """RECIPES §2.3 v98 with the libraries the recipe names, per sample, at full resolution."""

    needs_other_images = True

    def __init__(self, size: int):
        self.size = size
        self.rotate = imaugs.RandomRotation(p=0.35)
        self.crop_overlay = TV.RandomResizedCrop(size, scale=(0.7, 1.0))
        self.crop = TV.RandomResizedCrop(size, scale=(0.15, 1.0))
        self.jitter = TV.ColorJitter(0.8, 0.8, 0.8, 0.2)
        self.pixelize = imaugs.RandomPixelization(p=0.25)
        self.shuffle = imaugs.ShufflePixels(factor=0.1, p=0.25)
        self.gray = TV.RandomGrayscale(0.25)
        self.blur = imaugs.RandomBlur(p=0.25)
        self.perspective = TV.RandomPerspective(p=0.35)
        self.hflip, self.vflip = TV.RandomHorizontalFlip(0.5), TV.RandomVerticalFlip(0.1)
        self.erase = TV.RandomErasing(p=0.25, value="random")
        self.normalise = _Normalise()
        self.moderate = TV.Compose([TV.RandomResizedCrop(size, scale=(0.7, 1.0)), TV.RandomHorizontalFlip(), _Normalise()])

    def hard(self, img, other):
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
        img = self.rotate(img)
        if rng.random() < 0.10:
            o = other()
            s = float(rng.uniform(0.2, 0.8))
            kw = dict(opacity=float(rng.uniform(0.4, 1.0)), overlay_size=s, x_pos=float(rng.uniform(0, 1 - s)),
                      y_pos=float(rng.uniform(0, 1 - s)))
            img = AF.overlay_image(o, overlay=img, **kw) if rng.random() < 0.5 else AF.overlay_image(img, overlay=o, **kw)
            img = self.crop_overlay(img.convert("RGB"))
        else:
            img = self.crop(img)
        steps = [
            self.jitter, self.pixelize, self.shuffle,
            lambda im: _jpeg(im, rng.choice([10, 20, 30, 50])) if rng.random() < 0.35 else im,
            self.gray, self.blur, self.perspective, self.hflip, self.vflip,
            lambda im: _augly_text(im, rng, (1, 2), (5, 9), (0.1, 0.3), (0, 0.5), (0, 0.5)) if rng.random() < 0.35 else im,
            lambda im: _augly_emoji(im, rng, (0.1, 0.3), (1.0, 1.0)) if rng.random() < 0.35 else im,
            lambda im: im.filter(ImageFilter.EDGE_ENHANCE_MORE if rng.random() < 0.5 else ImageFilter.EDGE_ENHANCE)
            if rng.random() < 0.30 else im,
        ]
        for i in rng.permutation(len(steps)):
            img = steps[int(i)](img)
        return self.erase(self.normalise(img.convert("RGB")))


class NaiveSSCD:
    """RECIPES §8 ADVANCED with AugLy + torchvision, per sample, at full resolution."""

    def __init__(self, size: int):
        self.pre = TV.RandomHorizontalFlip()
        self.rot90 = TV.RandomApply([TV.RandomChoice([TV.RandomRotation((a, a), expand=True) for a in (90, 180, 270)])], p=0.05)
        self.rotate = imaugs.RandomRotation(0, 359, p=0.05)
        self.crop = TV.RandomResizedCrop(size)
        self.post = TV.Compose([TV.RandomApply([TV.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8), TV.RandomGrayscale(0.2)])
        self.normalise = _Normalise()

    def __call__(self, img):
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
        img = self.rot90(self.pre(img))
        if rng.random() < 0.1:
            img = _augly_text(img, rng, (1, 1), (3, 12), (0.1, 0.3), (0, 0.5), (0, 0.8), opacity=(0.1, 1.0))
        if rng.random() < 0.2:
            img = _augly_emoji(img, rng, (0.1, 0.5), (0.7, 1.0))
        img = self.post(self.crop(self.rotate(img)))
        if rng.random() < 0.5:
            img = AF.blur(img, radius=float(rng.uniform(1, 5)))
        if rng.random() < 0.2:
            img = _jpeg(img, rng.integers(1, 101))
        return self.normalise(img.convert("RGB"))


class NaiveViews(torch.utils.data.Dataset):
    """Full-resolution decode, then the naive policy: the baseline's TrainingViews."""

    def __init__(self, records, policy):
        self.records, self.policy = records, policy

    def __len__(self):
        return len(self.records)

    def _load(self, i):
        with Image.open(self.records[i].path) as im:
            return im.convert("RGB")

    def __getitem__(self, index):
        img = self._load(index)
        if isinstance(self.policy, NaiveLyakaapV98):
            other = lambda: self._load(int(torch.randint(len(self.records), ())))  # noqa: E731
            views = [self.policy.moderate(img), self.policy.hard(img, other)]
        else:
            views = [self.policy(img), self.policy(img)]
        return {"views": torch.stack(views), "label": index}


# ---------------------------------------------------------------------------------------------- timing


def samples_per_second(dataset, n: int, seed: int = 0) -> float:
    torch.manual_seed(seed)
    dataset[0]  # warm caches (fonts, emoji, imports)
    start = time.perf_counter()
    for i in range(n):
        dataset[i % len(dataset)]
    return n / (time.perf_counter() - start)


def loader_samples_per_second(dataset, workers: int, batches: int, batch_size: int) -> float:
    sampler = RandomSampler(dataset, replacement=True, num_samples=batch_size * (batches + 1 + workers),
                            generator=torch.Generator().manual_seed(0))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate_skipping)
    it = iter(loader)
    for _ in range(max(1, workers)):  # start-up (worker start, first batch of each worker) is not throughput
        next(it)
    start = time.perf_counter()
    n = 0
    for _ in range(batches):
        n += len(next(it)["label"])
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=48, help="samples timed per measurement")
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    ap.add_argument("--policies", nargs="+",
                    default=["simclr", "copy_edits", "lyakaap_v83", "lyakaap_v98", "sscd_advanced", "s_square", "visionforce"])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="DataLoader worker counts to compare with 0")
    args = ap.parse_args()
    torch.set_num_threads(1)  # one worker = one core

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "md"
        build_mini_disc(root, MiniDiscSpec(n_references=20, n_training=96, n_queries=10, image_size=1024, seed=1),
                        workers=2, progress=False)
        records = [ImageRecord(p.stem, "training", p) for p in sorted((root / "training").glob("*.jpg"))]
        sizes_px = [Image.open(r.path).size for r in records]
        result = {"machine": f"{platform.machine()} {torch.get_num_threads()} torch thread(s), "
                             f"{__import__('os').cpu_count()} cores", "input": f"{len(records)} JPEGs, long side "
                  f"{max(max(s) for s in sizes_px)} px", "unit": "training samples (2 views) per second per worker",
                  "policies": {}, "baselines": {}, "dataloader": {}}
        for size in args.sizes:
            draft = size  # decode JPEGs down to the view size at least (PIL draft), then shrink to 2 × size
            for name in args.policies:
                ds = TrainingViews(records, policy(name, size), n_views=2, draft_size=draft)
                result["policies"].setdefault(name, {})[str(size)] = round(samples_per_second(ds, args.images), 1)
            for name, naive in (("lyakaap_v98", NaiveLyakaapV98(size)), ("sscd_advanced", NaiveSSCD(size))):
                base = samples_per_second(NaiveViews(records, naive), args.images)
                ours = samples_per_second(TrainingViews(records, policy(name, size), n_views=2, draft_size=draft),
                                          args.images)
                result["baselines"].setdefault(name, {})[str(size)] = {
                    "augly_torchvision_baseline": round(base, 1), "isc": round(ours, 1), "ratio": round(ours / base, 2)}
        size = args.sizes[0]
        ds = TrainingViews(records, policy("lyakaap_v98", size), n_views=2, draft_size=size)
        w0 = loader_samples_per_second(ds, 0, 3, 16)
        result["dataloader"] = {"policy": f"lyakaap_v98 at {size}", "0 (main process)": round(w0, 1)}
        for w in args.workers:
            rate = loader_samples_per_second(ds, w, 3 * w, 16)
            result["dataloader"][f"{w} workers"] = round(rate, 1)
            result["dataloader"][f"{w} workers / 0"] = round(rate / w0, 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
