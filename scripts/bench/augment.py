"""Augmentation throughput: training samples/s per worker for each policy at 224 and 512 px, against a
straightforward AugLy/torchvision implementation of the same ops (full-resolution decode, one library call
per op) run side by side in this process; then DataLoader scaling with W workers. Prints JSON.

    .venv/bin/python scripts/bench/augment.py [--images 48] [--sizes 224 512] [--policies NAME ...] [--workers 1 2]
    .venv/bin/python scripts/bench/augment.py --albumentations [--side 512]

--albumentations: each hand-written op of isc_research/augment/ops.py (as it was before ops.py called albumentations
for the ones that qualified) next to albumentations' equivalent (its functional API with the same parameters;
PIL image in and out, as the policies chain them, so conversions are counted), on the same photo: time per
call (best of 5 rounds, interleaved) and the output difference (mean and max |Δ| in 0-255 levels). The ops
with no albumentations equivalent are listed with the reason.

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
from PIL import Image, ImageFilter, ImageOps
from torch.utils.data import DataLoader, RandomSampler
from torchvision import transforms as TV

import augly.image as imaugs
import augly.image.functional as AF

from isc_research import assets
from isc_research.augment import lyakaap, s_square, simclr, sscd_advanced, visionforce, copy_edits
from isc_research.augment.policies import IMAGENET_MEAN, IMAGENET_STD
from isc_research.data.datasets import TrainingViews, collate_skipping
from isc_research.data.mini_disc import MiniDiscSpec, build_mini_disc
from isc_research.data.records import ImageRecord

CONF = Path(__file__).resolve().parents[2] / "conf" / "augmentation"


def policy(name: str, size: int):
    """Build a policy from its YAML in conf/augmentation with data.train_size = size."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    cfg = OmegaConf.merge({"data": {"train_size": size}}, {"aug": cfg})
    kwargs = OmegaConf.to_container(cfg.aug, resolve=True)
    kwargs.pop("_target_"), kwargs.pop("_convert_", None)
    factory = {
        "lyakaap_v83": lyakaap,
        "lyakaap_v98": lyakaap,
        "sscd_advanced": sscd_advanced,
        "s_square": s_square,
        "visionforce": visionforce,
        "simclr": simclr,
        "copy_edits": copy_edits,
    }[name]
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
    text = [
        [int(ok[int(i)]) for i in rng.integers(0, len(ok), int(rng.integers(glyphs[0], glyphs[1] + 1)))]
        for _ in range(int(rng.integers(lines[0], lines[1] + 1)))
    ]
    return AF.overlay_text(
        img,
        text=text,
        font_file=font,
        font_size=float(rng.uniform(*size)),
        opacity=float(rng.uniform(*opacity)),
        color=assets.colour(rng),
        x_pos=float(rng.uniform(*x)),
        y_pos=float(rng.uniform(*y)),
    ).convert("RGB")


def _augly_emoji(img, rng, size, opacity):
    s = float(rng.uniform(*size))
    return AF.overlay_emoji(
        img,
        emoji_path=assets.pick(rng, assets.emoji_files()),
        emoji_size=s,
        opacity=float(rng.uniform(*opacity)),
        x_pos=float(rng.uniform(0, 1 - s)),
        y_pos=float(rng.uniform(0, 1 - s)),
    ).convert("RGB")


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
        self.moderate = TV.Compose(
            [TV.RandomResizedCrop(size, scale=(0.7, 1.0)), TV.RandomHorizontalFlip(), _Normalise()]
        )

    def hard(self, img, other):
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
        img = self.rotate(img)
        if rng.random() < 0.10:
            o = other()
            s = float(rng.uniform(0.2, 0.8))
            kw = dict(
                opacity=float(rng.uniform(0.4, 1.0)),
                overlay_size=s,
                x_pos=float(rng.uniform(0, 1 - s)),
                y_pos=float(rng.uniform(0, 1 - s)),
            )
            img = (
                AF.overlay_image(o, overlay=img, **kw) if rng.random() < 0.5 else AF.overlay_image(img, overlay=o, **kw)
            )
            img = self.crop_overlay(img.convert("RGB"))
        else:
            img = self.crop(img)
        steps = [
            self.jitter,
            self.pixelize,
            self.shuffle,
            lambda im: _jpeg(im, rng.choice([10, 20, 30, 50])) if rng.random() < 0.35 else im,
            self.gray,
            self.blur,
            self.perspective,
            self.hflip,
            self.vflip,
            lambda im: (
                _augly_text(im, rng, (1, 2), (5, 9), (0.1, 0.3), (0, 0.5), (0, 0.5)) if rng.random() < 0.35 else im
            ),
            lambda im: _augly_emoji(im, rng, (0.1, 0.3), (1.0, 1.0)) if rng.random() < 0.35 else im,
            lambda im: (
                im.filter(ImageFilter.EDGE_ENHANCE_MORE if rng.random() < 0.5 else ImageFilter.EDGE_ENHANCE)
                if rng.random() < 0.30
                else im
            ),
        ]
        for i in rng.permutation(len(steps)):
            img = steps[int(i)](img)
        return self.erase(self.normalise(img.convert("RGB")))


class NaiveSSCD:
    """RECIPES §8 ADVANCED with AugLy + torchvision, per sample, at full resolution."""

    def __init__(self, size: int):
        self.pre = TV.RandomHorizontalFlip()
        self.rot90 = TV.RandomApply(
            [TV.RandomChoice([TV.RandomRotation((a, a), expand=True) for a in (90, 180, 270)])], p=0.05
        )
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


# ------------------------------------------------------------------ ops.py against albumentations


def albumentations_pairs(side: int):
    """(name, ours, albumentations', note) with the same fixed parameters, PIL RGB in and out."""
    import cv2
    import albucore
    import albumentations.augmentations.blur.functional as AB
    import albumentations.augmentations.geometric.functional as AG
    import albumentations.augmentations.pixel.functional as AP

    from isc_research.augment import ops

    def alb(fn):
        return lambda img: Image.fromarray(fn(np.asarray(img)))

    # the hand-written versions that ops.py had before it called albumentations for these ops (commit 95bfd7f)
    def blend_lut(a, factor, other):
        lut = np.clip(factor * np.arange(256, dtype=np.float32) + (1 - factor) * other, 0, 255).astype(np.uint8)
        return cv2.LUT(a, lut)

    def gray(a):
        return cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY)

    def our_saturation(a, f=1.6):
        g = gray(a)[..., None].astype(np.float32)
        return np.clip(f * a.astype(np.float32) + (1 - f) * g, 0, 255).astype(np.uint8)

    def our_gaussian(img, s):
        return Image.fromarray(cv2.GaussianBlur(np.asarray(img), (0, 0), sigmaX=s, borderType=cv2.BORDER_REFLECT_101))

    def our_shift(img, shifts=(30, -20, 10)):
        luts = [np.clip(np.arange(256) + int(s), 0, 255).astype(np.uint8) for s in shifts]
        return Image.merge("RGB", [band.point(lut.tolist()) for band, lut in zip(img.split(), luts)])

    w, h = side, side * 3 // 4  # the photo's size (compare_with_albumentations)
    box = (w // 8, h // 10, w - w // 6, h - h // 12)
    crop_w, crop_h = box[2] - box[0], box[3] - box[1]
    sigma = 2.5
    return [
        (
            "brightness (ColorJitter)",
            alb(lambda a: blend_lut(a, 1.4, 0.0)),
            alb(lambda a: AP.adjust_brightness_torchvision(a, np.array([1.4]))),
            "torchvision semantics both",
        ),
        (
            "contrast (ColorJitter)",
            alb(lambda a: blend_lut(a, 0.6, float(gray(a).mean()))),
            alb(lambda a: AP.adjust_contrast_torchvision(a, 0.6)),
            "torchvision semantics both",
        ),
        (
            "saturation (ColorJitter)",
            alb(our_saturation),
            alb(lambda a: AP.adjust_saturation_torchvision(a, 1.6)),
            "torchvision semantics both",
        ),
        (
            "hue (ColorJitter)",
            alb(lambda a: ops._shift_hue(a, 0.1)),
            alb(lambda a: AP.adjust_hue_torchvision(a, 0.1)),
            "ours: 8-bit full-range HSV LUT; albumentations: HSV",
        ),
        ("grayscale", ops.grayscale, alb(lambda a: AP.to_gray(a, 3, "weighted_average")), "ITU-R 601 luma both"),
        (
            "pixelize (AugLy pixelization)",
            lambda img: ops.pixelize(img, 0.3),
            alb(lambda a: AP.downscale(a, 0.3, cv2.INTER_CUBIC, cv2.INTER_CUBIC)),
            "ours = AugLy's PIL bicubic; OpenCV bicubic",
        ),
        (
            "jpeg q=30 (AugLy encoding_quality)",
            lambda img: ops.jpeg(img, 30),
            alb(lambda a: AP.image_compression(a, 30, ".jpg")),
            "PIL's libjpeg vs OpenCV's",
        ),
        (
            "gaussian blur σ=2.5 (torchvision)",
            lambda img: our_gaussian(img, sigma),
            alb(lambda a: AP.separable_convolve(a, AB.create_gaussian_kernel_1d(sigma, 2 * int(3 * sigma) + 1))),
            "both ±3σ kernels",
        ),
        (
            "blur radius 2.5 (AugLy blur, PIL)",
            lambda img: img.filter(ImageFilter.GaussianBlur(sigma)),
            alb(lambda a: AP.separable_convolve(a, AB.create_gaussian_kernel_1d(sigma, 2 * int(3 * sigma) + 1))),
            "PIL's GaussianBlur is an extended-box approximation",
        ),
        ("invert", ImageOps.invert, alb(AP.invert), "ours: PIL ImageOps.invert"),
        (
            "channel swap",
            lambda img: Image.fromarray(np.ascontiguousarray(np.asarray(img)[..., [2, 0, 1]])),
            alb(lambda a: AP.channel_shuffle(a, [2, 0, 1])),
            "ours: numpy fancy indexing",
        ),
        (
            "channel shift (RGBShift)",
            our_shift,
            alb(lambda a: albucore.add_vector(a, np.array([30.0, -20.0, 10.0]), inplace=False)),
            "ours: PIL point per band",
        ),
        (
            "crop + resize to 224 (RandomResizedCrop)",
            lambda img: ops.crop_resize(img, box, 224),
            alb(lambda a: AG.resize(a[box[1] : box[3], box[0] : box[2]], (224, 224), cv2.INTER_LINEAR)),
            f"a {crop_w}×{crop_h} box; ours antialiased (PIL reducing), albumentations' INTER_LINEAR is not",
        ),
        (
            "crop + resize to 224, INTER_AREA",
            lambda img: ops.crop_resize(img, box, 224),
            alb(lambda a: AG.resize(a[box[1] : box[3], box[0] : box[2]], (224, 224), cv2.INTER_AREA)),
            "albumentations' area_for_downscale choice",
        ),
        (
            "pad (AugLy pad)",
            lambda img: ops.pad(img, 0.1, 0.2, (1, 2, 3)),
            alb(
                lambda a: AG.pad_with_params(
                    a,
                    int(0.2 * a.shape[0]),
                    int(0.2 * a.shape[0]),
                    int(0.1 * a.shape[1]),
                    int(0.1 * a.shape[1]),
                    cv2.BORDER_CONSTANT,
                    (1, 2, 3),
                )
            ),
            "",
        ),
    ]


NO_EQUIVALENT = {
    "rotate_and_crop (AugLy rotate)": "A.Rotate(crop_border=True) crops to the largest rectangle too, but only in "
    "Compose with its own RNG, and its output keeps the input size after cropping "
    "(resized), unlike AugLy's smaller image",
    "perspective / perspective_sigma": "A.Perspective draws corner shifts from N(0, scale·side), not torchvision's "
    "uniform ≤ distortion/2; both are one cv2.warpPerspective (same op)",
    "shuffle_pixels": "no albumentations op moves a fraction of the pixels",
    "text / emoji / meme / paste / overlay_with_other / screenshot / stripes": "AugLy's overlays (fonts, Twemoji, "
    "templates); A.TextImage needs boxes and draws one font, A.OverlayElements takes given masks",
    "sharpen (AugLy, PIL Sharpness)": "A.Sharpen is a different kernel (alpha/lightness), not PIL's blend with SMOOTH",
    "edge_enhance, opacity, rotate90, crop_fractions": "one PIL call each",
}


def compare_with_albumentations(side: int, rounds: int = 5, calls: int = 20) -> dict:
    from skimage import data as photos

    from isc_research.augment.compose import PolicyView  # noqa: F401  (imports isc_research.augment.ops: OpenCV single-threaded)

    photo = Image.fromarray(photos.astronaut()).resize((side, side * 3 // 4), Image.BICUBIC)
    rows = {}
    for name, ours, theirs, note in albumentations_pairs(side):
        a, b = np.asarray(ours(photo), np.int16), np.asarray(theirs(photo), np.int16)
        best = {"isc_ms": float("inf"), "albumentations_ms": float("inf")}
        for _ in range(rounds):  # interleaved, so that load on the shared machine hits both alike
            for key, fn in (("isc_ms", ours), ("albumentations_ms", theirs)):
                start = time.perf_counter()
                for _ in range(calls):
                    fn(photo)
                best[key] = min(best[key], (time.perf_counter() - start) / calls * 1e3)
        same_shape = a.shape == b.shape
        diff = np.abs(a - b) if same_shape else None
        rows[name] = {
            "isc_ms": round(best["isc_ms"], 3),
            "albumentations_ms": round(best["albumentations_ms"], 3),
            "albumentations / isc time": round(best["albumentations_ms"] / best["isc_ms"], 2),
            "mean_abs_diff": round(float(diff.mean()), 3) if same_shape else None,
            "max_abs_diff": int(diff.max()) if same_shape else None,
            "shapes": None if same_shape else [list(a.shape), list(b.shape)],
            "note": note,
        }
    return {
        "input": f"skimage astronaut resized to {photo.width}×{photo.height}, PIL RGB in and out",
        "unit": f"ms per call, best of {rounds} rounds × {calls} calls",
        "ops": rows,
        "no_albumentations_equivalent": NO_EQUIVALENT,
    }


# ---------------------------------------------------------------------------------------------- timing


def samples_per_second(dataset, n: int, seed: int = 0) -> float:
    torch.manual_seed(seed)
    dataset[0]  # warm caches (fonts, emoji, imports)
    start = time.perf_counter()
    for i in range(n):
        dataset[i % len(dataset)]
    return n / (time.perf_counter() - start)


def loader_samples_per_second(dataset, workers: int, batches: int, batch_size: int) -> float:
    sampler = RandomSampler(
        dataset,
        replacement=True,
        num_samples=batch_size * (batches + 1 + workers),
        generator=torch.Generator().manual_seed(0),
    )
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate_skipping
    )
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
    ap.add_argument(
        "--policies",
        nargs="+",
        default=["simclr", "copy_edits", "lyakaap_v83", "lyakaap_v98", "sscd_advanced", "s_square", "visionforce"],
    )
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="DataLoader worker counts to compare with 0")
    ap.add_argument("--albumentations", action="store_true", help="only compare ops.py with albumentations")
    ap.add_argument("--side", type=int, default=512, help="photo width for --albumentations")
    args = ap.parse_args()
    torch.set_num_threads(1)  # one worker = one core
    if args.albumentations:
        import albumentations

        result = {
            "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, OpenCV 1 thread",
            "albumentations": albumentations.__version__,
            **compare_with_albumentations(args.side),
        }
        print(json.dumps(result, indent=2))
        return

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "md"
        build_mini_disc(
            root,
            MiniDiscSpec(n_references=20, n_training=96, n_queries=10, image_size=1024, seed=1),
            workers=2,
            progress=False,
        )
        records = [ImageRecord(p.stem, "training", p) for p in sorted((root / "training").glob("*.jpg"))]
        sizes_px = [Image.open(r.path).size for r in records]
        result = {
            "machine": f"{platform.machine()} {torch.get_num_threads()} torch thread(s), "
            f"{__import__('os').cpu_count()} cores",
            "input": f"{len(records)} JPEGs, long side {max(max(s) for s in sizes_px)} px",
            "unit": "training samples (2 views) per second per worker",
            "policies": {},
            "baselines": {},
            "dataloader": {},
        }
        for size in args.sizes:
            draft = size  # decode JPEGs down to the view size at least (PIL draft), then shrink to 2 × size
            for name in args.policies:
                ds = TrainingViews(records, policy(name, size), n_views=2, draft_size=draft)
                result["policies"].setdefault(name, {})[str(size)] = round(samples_per_second(ds, args.images), 1)
            for name, naive in (("lyakaap_v98", NaiveLyakaapV98(size)), ("sscd_advanced", NaiveSSCD(size))):
                base = samples_per_second(NaiveViews(records, naive), args.images)
                ours = samples_per_second(
                    TrainingViews(records, policy(name, size), n_views=2, draft_size=draft), args.images
                )
                result["baselines"].setdefault(name, {})[str(size)] = {
                    "augly_torchvision_baseline": round(base, 1),
                    "isc": round(ours, 1),
                    "ratio": round(ours / base, 2),
                }
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
