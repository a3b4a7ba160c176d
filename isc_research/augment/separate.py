"""The "separate" retriever's stage-1 policy (matching track 2nd, RECIPES §6; aug_ver 18 of
seungkee's code/descriptor_track/train_eval/repo/10/10120830_v3_1_other_gray/ssl.py: `transforms()` and
`CustomAug_10032013`). Asymmetric: view 1 is the plain image (square resize, flip, grey); view 2 is one of
three edits drawn with equal odds — a crop resized back, the image pasted onto a black square, or onto another
training image — each followed by flips, a 90° turn, a rotation or shear, an emoji patch and a line of text,
then rare inversion / cartoon / posterize / solarize, SimCLR's colour distortion, grey and blur.
Stage 2 trains with the same aug_ver 18, which the stage-2 ssl.py (repo/10/10120830_v3_1_other_0927newbatch_gray)
maps to `CustomAug3`: `separate_v18_stage2` below (translucent overlays, emoji and text before an overlay,
albumentations spatial ops and always one of 32 albumentations pixel ops at the 1.0.3 defaults the source pinned).
The numbers are in conf/augmentation/separate_v18{,_stage2}.yaml; their source rows are in
conf/_sources/parts/separate_v18_augmentation.yaml and conf/_sources/separate_retriever_stage2.yaml."""

from __future__ import annotations

import math
import string
from functools import partial

import cv2
import numpy as np
from PIL import Image, ImageOps
from torchvision.transforms.v2 import functional as TF

from isc_research import assets
from isc_research.augment import ops
from isc_research.augment.compose import Maybe, OneOf, PolicyView, Sequential
from isc_research.augment.steps import gaussian_blur, grayscale, hflip, vflip

Range = tuple[float, float]


def resize_square(img: Image.Image, rng, ctx, size: int) -> Image.Image:
    """torchvision Resize((size, size)) on a PIL image: PIL bilinear (antialiased when shrinking)."""
    return img if img.size == (size, size) else img.resize((size, size), Image.BILINEAR)


def crop_resize_bicubic(img: Image.Image, rng, ctx, size: int, scale: Range, ratio: Range) -> Image.Image:
    """torchvision RandomResizedCrop(size, scale, ratio, bicubic)."""
    box = ops.random_resized_box(img.width, img.height, rng, scale, ratio)
    return img.resize((size, size), Image.BICUBIC, box=box)


def turn90(img: Image.Image, rng, ctx) -> Image.Image:
    """torchvision RandomRotation((90, 90)): a quarter turn counter-clockwise (the images are square here,
    so nothing is cut)."""
    return img.transpose(Image.ROTATE_90)


def rotate(img: Image.Image, rng, ctx, degrees: Range) -> Image.Image:
    """torchvision RandomAffine(degrees): rotation about the centre, same size, nearest, black corners."""
    return TF.affine(img, angle=float(rng.uniform(*degrees)), translate=[0, 0], scale=1.0, shear=[0.0, 0.0])


def shear(img: Image.Image, rng, ctx, degrees: float) -> Image.Image:
    """torchvision RandomAffine(degrees=0, shear=degrees): x-shear uniform in ±degrees, nearest, black fill."""
    return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[float(rng.uniform(-degrees, degrees)), 0.0])


def emoji_patch(
    img: Image.Image,
    rng,
    ctx,
    crop_scale: Range,
    crop_ratio: Range,
    box_scale: Range,
    box_ratio: Range,
    opacity: Range,
    avoid: tuple[int, int] | None = None,
) -> Image.Image:
    """The source's AttachEmoji (emoji_ver 1): a random-resized crop of an emoji whose transparent pixels are
    filled with one random colour (an opaque patch), resized into a random box of the image (area and aspect
    ratio as RandomResizedCrop's) and pasted with its alpha × an opacity drawn from `opacity`. The emoji are
    AugLy's packaged Twemoji (72 px) instead of the source's Noto 512-px set (a download). `avoid`: a point
    the box must not cover (stage 2's opaque emoji keeps clear of the overlaid image's centre; the source
    redraws until it does, here at most 100 times)."""
    emoji = assets.emoji_image(assets.pick(rng, assets.emoji_files()))
    crop = ops.random_resized_box(emoji.width, emoji.height, rng, crop_scale, crop_ratio)
    for _ in range(100):
        x0, y0, x1, y1 = ops.random_resized_box(img.width, img.height, rng, box_scale, box_ratio)
        if avoid is None or not (x0 <= avoid[0] <= x1 and y0 <= avoid[1] <= y1):
            break
    patch = np.array(emoji.resize((x1 - x0, y1 - y0), Image.BICUBIC, box=crop))
    hole = patch[..., 3] == 0
    patch[hole, :3] = ops.random_colour(rng)
    patch[hole, 3] = 255
    mask = (patch[..., 3].astype(np.float32) * float(rng.uniform(*opacity))).astype(np.uint8)
    out = img.copy()
    out.paste(Image.fromarray(np.ascontiguousarray(patch[..., :3])), (x0, y0), Image.fromarray(mask))
    return out


TEXT_ALPHABET = string.ascii_letters + string.digits + " " * 4  # the source's characters: letters, digits, 4 spaces


def text_line(img: Image.Image, rng, ctx, glyphs: tuple[int, int], font_size: Range, x: Range, y: Range) -> Image.Image:
    """The source's OverlayText: one line of 5–30 random characters (letters, digits and spaces, as the source)
    in an AugLy Latin font (the source keeps the AugLy fonts that have 'a', 'A' and '1'), size a fraction of the short
    side, top-left corner at (x·w, y·h) (x may be negative: the line starts outside the image), random colour.
    The source's random alpha is written into the alpha channel and dropped with it: the text is opaque."""
    return ops.text(
        img,
        rng,
        lines=(1, 1),
        glyphs=tuple(glyphs),
        font_size=tuple(font_size),
        x=tuple(x),
        y=tuple(y),
        alphabet=TEXT_ALPHABET,
    )


def onto_canvas(
    img: Image.Image, rng, ctx, size: int, scale: Range, ratio: Range, rotate45_p: float, black: bool
) -> Image.Image:
    """The source's OverlayImageOnRandomBackground: a size×size canvas (black, or another training image
    resized to it, bicubic as PIL's default); with probability `rotate45_p` the image is first squared,
    turned 45° (black corners) and centre-cropped to size·(1+√2)/(2+√2); then it is resized (bicubic) into a
    random box of the canvas (area and aspect ratio as RandomResizedCrop's) and pasted opaque."""
    canvas = Image.new("RGB", (size, size)) if black else ctx.other_image().resize((size, size), Image.BICUBIC)
    if rotate45_p > 0 and rng.random() < rotate45_p:
        turned = img.resize((size, size), Image.BILINEAR).rotate(45, Image.BILINEAR)
        side = int((1 + math.sqrt(2)) * size / (2 + math.sqrt(2)))
        start = (size - side) // 2
        img = turned.crop((start, start, start + side, start + side))
    x0, y0, x1, y1 = ops.random_resized_box(size, size, rng, scale, ratio)
    canvas.paste(img.resize((x1 - x0, y1 - y0), Image.BICUBIC), (x0, y0))
    return canvas


onto_canvas.needs_other_images = True  # (its black branch never calls ctx.other_image())


def invert(img: Image.Image, rng, ctx) -> Image.Image:
    """albumentations InvertImg: 255 − x."""
    return ImageOps.invert(img)


def cartoon(img: Image.Image, rng, ctx) -> Image.Image:
    """Stand-in for imgaug's Cartoon (imgaug is unmaintained and does not install next to numpy 2): an
    edge-preserving smoothing (OpenCV bilateral filter) with dark edges from an adaptive threshold, the same
    flat-colours-and-outlines look."""
    a = np.asarray(img)
    smooth = cv2.bilateralFilter(a, 9, 75, 75)
    grey = cv2.medianBlur(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), 5)
    edges = cv2.adaptiveThreshold(grey, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 5)
    return Image.fromarray(np.where(edges[..., None] == 0, 0, smooth).astype(np.uint8))


def posterize(img: Image.Image, rng, ctx, bits: int) -> Image.Image:
    """torchvision RandomPosterize(bits) on a PIL image (PIL ImageOps.posterize)."""
    return ImageOps.posterize(img, int(bits))


def solarize(img: Image.Image, rng, ctx, threshold: float) -> Image.Image:
    """torchvision RandomSolarize(threshold) on a PIL image (PIL ImageOps.solarize)."""
    return ImageOps.solarize(img, threshold)


def colour_jitter(img: Image.Image, rng, ctx, strength: list[float]) -> Image.Image:
    return ops.color_jitter(img, rng, *strength)


def separate_v18(
    size: int,
    view1_hflip_p: float,
    view1_grayscale_p: float,
    branch_weights: list[float],
    crop_scale: Range,
    crop_ratio: Range,
    overlay_scale: Range,
    overlay_ratio: Range,
    overlay_rotate45_p: float,
    hflip_p: float,
    vflip_p: float,
    turn90_p: float,
    affine_p: float,
    rotate_degrees: Range,
    shear_degrees: float,
    emoji_p: float,
    emoji_crop_scale: Range,
    emoji_crop_ratio: Range,
    emoji_box_scale: Range,
    emoji_box_ratio: Range,
    emoji_opacity: Range,
    text_p: float,
    text_glyphs: tuple[int, int],
    text_size: Range,
    text_x: Range,
    text_y: Range,
    invert_p: float,
    cartoon_p: float,
    posterize_p: float,
    posterize_bits: int,
    solarize_p: float,
    solarize_threshold: float,
    jitter_p: float,
    jitter: list[float],
    grayscale_p: float,
    blur_p: float,
    blur_sigma: Range,
    work_side_factor: float | None = 2.0,
) -> tuple[PolicyView, PolicyView]:
    """(view 1, view 2) of aug_ver 18, each view's steps in the source's order."""
    closing = _closing_steps(
        posterize_p, posterize_bits, solarize_p, solarize_threshold, jitter_p, jitter, grayscale_p, blur_p, blur_sigma
    )
    after = [  # the same steps follow each of the three edits
        Maybe(hflip_p, hflip),
        Maybe(vflip_p, vflip),
        Maybe(turn90_p, turn90),
        Maybe(
            affine_p,
            OneOf([partial(rotate, degrees=tuple(rotate_degrees)), partial(shear, degrees=float(shear_degrees))]),
        ),
        Maybe(
            emoji_p,
            partial(
                emoji_patch,
                crop_scale=tuple(emoji_crop_scale),
                crop_ratio=tuple(emoji_crop_ratio),
                box_scale=tuple(emoji_box_scale),
                box_ratio=tuple(emoji_box_ratio),
                opacity=tuple(emoji_opacity),
            ),
        ),
        Maybe(
            text_p,
            partial(text_line, glyphs=tuple(text_glyphs), font_size=tuple(text_size), x=tuple(text_x), y=tuple(text_y)),
        ),
    ]
    overlay = partial(
        onto_canvas, size=size, scale=tuple(overlay_scale), ratio=tuple(overlay_ratio), rotate45_p=overlay_rotate45_p
    )
    view2_ops = [
        OneOf(
            [
                Sequential(
                    [partial(crop_resize_bicubic, size=size, scale=tuple(crop_scale), ratio=tuple(crop_ratio)), *after]
                ),
                Sequential([partial(overlay, black=True), *after]),
                Sequential([partial(overlay, black=False), *after]),
            ],
            weights=branch_weights,
        ),
        Maybe(invert_p, invert),
        Maybe(cartoon_p, cartoon),
        *closing,
    ]
    return _views(size, view1_hflip_p, view1_grayscale_p, view2_ops, work_side_factor)


# ------------------------------------------------------------------------------------------------ stage 2
# The stage-2 ssl.py (repo/10/10120830_v3_1_other_0927newbatch_gray) maps the same aug_ver 18 to CustomAug3.


def albumentations_1_0_3_pixel_ops() -> dict:
    """The 32 pixel ops of CustomAug3's albu_pixel OneOf, each at albumentations 1.0.3's defaults (the source's
    code/requirements.txt pins 1.0.3), written with albumentations 2's argument names where those changed.
    Two are near, not equal: 1.0.3's GaussNoise draws a variance in 10–50 (2 draws a standard deviation in
    √10–√50), and its GaussianBlur lets OpenCV derive σ from the 3–7 kernel (0.8–1.4; 2 draws σ in that range
    apart from the kernel size, since σ = 0 there divides by zero)."""
    import albumentations as A

    return {
        "Blur": A.Blur(blur_limit=(3, 7)),
        "CLAHE": A.CLAHE(),
        "ChannelDropout": A.ChannelDropout(),
        "ChannelShuffle": A.ChannelShuffle(),
        "ColorJitter": A.ColorJitter(0.2, 0.2, 0.2, 0.2),
        "Downscale": A.Downscale(scale_range=(0.25, 0.25)),
        "Emboss": A.Emboss(),
        "Equalize": A.Equalize(),
        "FancyPCA": A.FancyPCA(),
        "GaussNoise": A.GaussNoise(std_range=(math.sqrt(10) / 255, math.sqrt(50) / 255)),
        "GaussianBlur": A.GaussianBlur(blur_limit=(3, 7), sigma_limit=(0.8, 1.4)),
        "GlassBlur": A.GlassBlur(),
        "HueSaturationValue": A.HueSaturationValue(),
        "ISONoise": A.ISONoise(),
        "ImageCompression": A.ImageCompression(quality_range=(99, 100)),
        "InvertImg": A.InvertImg(),
        "MedianBlur": A.MedianBlur(blur_limit=(3, 7)),
        "MotionBlur": A.MotionBlur(blur_limit=(3, 7)),
        "MultiplicativeNoise": A.MultiplicativeNoise(),
        "Posterize": A.Posterize(num_bits=4),
        "RGBShift": A.RGBShift(),
        "RandomBrightnessContrast": A.RandomBrightnessContrast(),
        "RandomFog": A.RandomFog(),
        "RandomGamma": A.RandomGamma(),
        "RandomRain": A.RandomRain(drop_length=20),
        "RandomShadow": A.RandomShadow(),
        "RandomSnow": A.RandomSnow(),
        "RandomToneCurve": A.RandomToneCurve(),
        "Sharpen": A.Sharpen(),
        "Solarize": A.Solarize(threshold_range=(0.5, 0.5)),
        "Superpixels": A.Superpixels(p_replace=(0.1, 0.1)),
        "ToSepia": A.ToSepia(),
    }


def albumentations_1_0_3_spatial_ops() -> dict:
    """CustomAug3's albu_spatial OneOf at albumentations 1.0.3's defaults: Affine() (all ranges unset: the
    identity), Perspective() (corners 5–10 %), ShiftScaleRotate() (shift 6.25 %, scale ±10 %, ±45°,
    reflected border)."""
    import albumentations as A

    return {
        "Affine": A.Affine(),
        "Perspective": A.Perspective(scale=(0.05, 0.1)),
        # albumentations 2 deprecates ShiftScaleRotate for this Affine (same draws: shifts, one scale, angle)
        "ShiftScaleRotate": A.Affine(
            translate_percent=(-0.0625, 0.0625),
            scale=(0.9, 1.1),
            keep_ratio=True,
            rotate=(-45, 45),
            border_mode=cv2.BORDER_REFLECT_101,
        ),
    }


class AlbumentationsOneOf:
    """One of the named albumentations ops (uniform), seeded from the policy's generator on every call."""

    def __init__(self, names: list[str], factory):
        ops_by_name = factory()
        unknown = sorted(set(names) - set(ops_by_name))
        if unknown:
            raise ValueError(f"unknown albumentations ops {unknown}; known: {sorted(ops_by_name)}")
        self.names, self.factory = list(names), factory
        self.ops = [ops_by_name[n] for n in names]
        for op in self.ops:
            op.p = 1.0

    def __call__(self, img: Image.Image, rng, ctx) -> Image.Image:
        op = self.ops[int(rng.integers(len(self.ops)))]
        op.set_random_seed(int(rng.integers(2**31)))
        return Image.fromarray(op(image=np.asarray(img))["image"])


def overlay_stage2(
    img: Image.Image,
    rng,
    ctx,
    size: int,
    scale: Range,
    ratio: Range,
    opacity: Range,
    crop_p: float,
    crop_scale: Range,
    crop_ratio: Range,
    black: bool,
) -> tuple[Image.Image, tuple[int, int]]:
    """The stage-2 OverlayImageOnRandomBackground: a box of the size×size canvas (black, or another training
    image resized to it) as in stage 1; half the time the image is first random-resized-cropped (bicubic);
    it is resized into the box and pasted with opacity drawn from `opacity`. Returns the box's centre."""
    canvas = Image.new("RGB", (size, size)) if black else ctx.other_image().resize((size, size), Image.BICUBIC)
    x0, y0, x1, y1 = ops.random_resized_box(size, size, rng, scale, ratio)
    if rng.random() < crop_p:
        img = crop_resize_bicubic(img, rng, ctx, size, crop_scale, crop_ratio)
    mask = Image.new("L", (x1 - x0, y1 - y0), int(255 * float(rng.uniform(*opacity))))
    canvas.paste(img.resize((x1 - x0, y1 - y0), Image.BICUBIC), (x0, y0), mask)
    return canvas, ((x0 + x1) // 2, (y0 + y1) // 2)


class Stage2View:
    """CustomAug3.__call__ for view 2, step by step as the source."""

    needs_other_images = True

    def __init__(
        self,
        size,
        crop_scale,
        crop_ratio,
        flips,
        spatial_p,
        basic_spatial_p,
        basic_spatial,
        albu_spatial,
        emoji_p,
        emoji,
        emoji_2,
        emoji_3,
        text_p,
        text,
        overlay,
        other_emoji_3_p,
        invert_p,
        cartoon_p,
        albu_pixel,
    ):
        self.__dict__.update({k: v for k, v in locals().items() if k != "self"})

    def children(self):
        return [self.flips, self.basic_spatial, self.albu_spatial, self.emoji, self.emoji_2, self.text, self.albu_pixel]

    def _spatial(self, img, rng, ctx):
        if rng.random() < self.spatial_p:
            img = (self.basic_spatial if rng.random() < self.basic_spatial_p else self.albu_spatial)(img, rng, ctx)
        return img

    def _maybe(self, p, op, img, rng, ctx):
        return op(img, rng, ctx) if rng.random() < p else img

    def __call__(self, img: Image.Image, rng, ctx) -> Image.Image:
        r = rng.random()
        if r < 1 / 3:
            img = crop_resize_bicubic(img, rng, ctx, self.size, self.crop_scale, self.crop_ratio)
            img = self._spatial(self.flips(img, rng, ctx), rng, ctx)
            img = self._maybe(self.emoji_p, self.emoji, img, rng, ctx)
            img = self._maybe(self.text_p, self.text, img, rng, ctx)
        elif r < 2 / 3:
            img = self._maybe(self.emoji_p, self.emoji, img, rng, ctx)
            img = self._maybe(self.text_p, self.text, img, rng, ctx)
            img, _ = self.overlay(img, rng, ctx, black=True)
            img = self._spatial(self.flips(img, rng, ctx), rng, ctx)
        else:
            img = self._maybe(self.emoji_p, self.emoji, img, rng, ctx)
            img = self._maybe(self.text_p, self.text, img, rng, ctx)
            img, centre = self.overlay(img, rng, ctx, black=False)
            opaque_emoji = rng.random() < self.other_emoji_3_p  # the source: randint(2, 10) == 10
            if opaque_emoji:
                img = self.emoji_3(img, rng, ctx, avoid=centre)
            img = self._spatial(self.flips(img, rng, ctx), rng, ctx)
            if not opaque_emoji:
                img = self.emoji_2(img, rng, ctx)
            img = self._maybe(self.text_p, self.text, img, rng, ctx)
        img = self._maybe(self.invert_p, invert, img, rng, ctx)
        img = self._maybe(self.cartoon_p, cartoon, img, rng, ctx)
        return self.albu_pixel(img, rng, ctx)


def separate_v18_stage2(
    size: int,
    view1_hflip_p: float,
    view1_grayscale_p: float,
    crop_scale: Range,
    crop_ratio: Range,
    overlay_scale: Range,
    overlay_ratio: Range,
    overlay_opacity: Range,
    overlay_crop_p: float,
    hflip_p: float,
    vflip_p: float,
    turn90_p: float,
    spatial_p: float,
    basic_spatial_p: float,
    rotate_degrees: Range,
    shear_degrees: float,
    albu_spatial: list[str],
    emoji_p: float,
    emoji_crop_scale: Range,
    emoji_crop_ratio: Range,
    emoji_box_scale: Range,
    emoji_box_ratio: Range,
    emoji_opacity: Range,
    emoji_2_opacity: Range,
    emoji_3_opacity: Range,
    other_emoji_3_p: float,
    text_p: float,
    text_glyphs: tuple[int, int],
    text_size: Range,
    text_x: Range,
    text_y: Range,
    invert_p: float,
    cartoon_p: float,
    albu_pixel: list[str],
    posterize_p: float,
    posterize_bits: int,
    solarize_p: float,
    solarize_threshold: float,
    jitter_p: float,
    jitter: list[float],
    grayscale_p: float,
    blur_p: float,
    blur_sigma: Range,
    work_side_factor: float | None = 2.0,
) -> tuple[PolicyView, PolicyView]:
    """(view 1, view 2) of aug_ver 18 in the stage-2 ssl.py (CustomAug3); view 1 as stage 1."""
    closing = _closing_steps(
        posterize_p, posterize_bits, solarize_p, solarize_threshold, jitter_p, jitter, grayscale_p, blur_p, blur_sigma
    )

    def emoji_with(opacity):
        return partial(
            emoji_patch,
            crop_scale=tuple(emoji_crop_scale),
            crop_ratio=tuple(emoji_crop_ratio),
            box_scale=tuple(emoji_box_scale),
            box_ratio=tuple(emoji_box_ratio),
            opacity=tuple(opacity),
        )

    view2 = Stage2View(
        size=size,
        crop_scale=tuple(crop_scale),
        crop_ratio=tuple(crop_ratio),
        flips=Sequential([Maybe(hflip_p, hflip), Maybe(vflip_p, vflip), Maybe(turn90_p, turn90)]),
        spatial_p=spatial_p,
        basic_spatial_p=basic_spatial_p,
        basic_spatial=OneOf(
            [partial(rotate, degrees=tuple(rotate_degrees)), partial(shear, degrees=float(shear_degrees))]
        ),
        albu_spatial=AlbumentationsOneOf(albu_spatial, albumentations_1_0_3_spatial_ops),
        emoji_p=emoji_p,
        emoji=emoji_with(emoji_opacity),
        emoji_2=emoji_with(emoji_2_opacity),
        emoji_3=emoji_with(emoji_3_opacity),
        text_p=text_p,
        text=partial(
            text_line, glyphs=tuple(text_glyphs), font_size=tuple(text_size), x=tuple(text_x), y=tuple(text_y)
        ),
        overlay=partial(
            overlay_stage2,
            size=size,
            scale=tuple(overlay_scale),
            ratio=tuple(overlay_ratio),
            opacity=tuple(overlay_opacity),
            crop_p=overlay_crop_p,
            crop_scale=tuple(crop_scale),
            crop_ratio=tuple(crop_ratio),
        ),
        other_emoji_3_p=other_emoji_3_p,
        invert_p=invert_p,
        cartoon_p=cartoon_p,
        albu_pixel=AlbumentationsOneOf(albu_pixel, albumentations_1_0_3_pixel_ops),
    )
    view2_ops = [
        view2,
        *closing,
    ]
    return _views(size, view1_hflip_p, view1_grayscale_p, view2_ops, work_side_factor)


def _closing_steps(
    posterize_p, posterize_bits, solarize_p, solarize_threshold, jitter_p, jitter, grayscale_p, blur_p, blur_sigma
) -> list:
    """The photometric steps that end view 2 in both stages' ssl.py: posterize, solarize, colour jitter, grey, blur."""
    return [
        Maybe(posterize_p, partial(posterize, bits=int(posterize_bits))),
        Maybe(solarize_p, partial(solarize, threshold=float(solarize_threshold))),
        Maybe(jitter_p, partial(colour_jitter, strength=list(jitter))),
        Maybe(grayscale_p, grayscale),
        Maybe(blur_p, partial(gaussian_blur, sigma=tuple(blur_sigma))),
    ]


def _views(size, view1_hflip_p, view1_grayscale_p, view2_ops, work_side_factor) -> tuple[PolicyView, PolicyView]:
    """View 1 (square resize, flip, grey: the same in both stages) and view 2 from its steps."""
    view1 = PolicyView(
        [partial(resize_square, size=size), Maybe(view1_hflip_p, hflip), Maybe(view1_grayscale_p, grayscale)], size
    )
    work_side = None if work_side_factor is None else int(round(work_side_factor * size))
    return view1, PolicyView(view2_ops, size, work_side)
