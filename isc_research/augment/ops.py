"""Image operations of the winners' augmentation policies: PIL RGB in, PIL RGB out, randomness from a
numpy Generator passed in.

Each op keeps the parameters of the AugLy / torchvision op a recipe names (RECIPES §2.3, §3.2, §4, §8) and
computes the same thing, faster where it matters: fonts, glyph lists and emoji are cached instead of being
re-read on every call, crop + resize is one resampling pass. Where albumentations has the same op and is at
least as fast (scripts/bench/augment.py --albumentations; README, Performance), the op calls it: colour jitter's
brightness, contrast and saturation, the Gaussian blurs, invert, channel swap and shift. Each hand-written op
says why in its docstring. Deviations from the named op are stated in the docstring.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

# importing albumentations asks PyPI for a newer version (a network call in every process) unless this is set
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albucore  # noqa: E402  (albumentations' own array core)
import albumentations.augmentations.blur.functional as alb_blur  # noqa: E402
import albumentations.augmentations.pixel.functional as alb_pixel  # noqa: E402

from isc_research.augment.augly_compat import meme_format, perspective_transform, warp_to_corners
from isc_research import assets

Colour = tuple[int, int, int]

# OpenCV single-threaded for every op that uses it (warps, colour conversions, blur): a thread pool made in the
# parent before a DataLoader fork can hang the workers, and the ops run one per worker anyway.
cv2.setNumThreads(1)


def random_colour(rng: np.random.Generator) -> Colour:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


# ------------------------------------------------------------------------------------------ geometry


def rotate_and_crop(img: Image.Image, degrees: float) -> Image.Image:
    """AugLy `rotate`: rotate (counter-clockwise, as PIL) and keep the largest axis-aligned rectangle inside
    the rotated image (no black corners). One OpenCV affine warp straight into that rectangle, bilinear
    (AugLy rotates the whole expanded canvas with nearest-neighbour resampling, then crops). Hand-written:
    albumentations' Rotate(crop_border=True) resizes the crop back to the input size, AugLy's output is smaller."""
    w, h = img.size
    wr, hr = _largest_inner_rectangle(w, h, degrees)
    out_w, out_h = max(1, int(wr)), max(1, int(hr))
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    m[:, 2] += (out_w / 2 - w / 2, out_h / 2 - h / 2)  # centre of the image → centre of the output
    return Image.fromarray(
        cv2.warpAffine(np.asarray(img), m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    )


def _largest_inner_rectangle(w: int, h: int, degrees: float) -> tuple[float, float]:
    """Width and height of the largest axis-aligned rectangle inside a w×h rectangle rotated by `degrees`."""
    long_side, short_side = max(w, h), min(w, h)
    sin_a, cos_a = abs(math.sin(math.radians(degrees))), abs(math.cos(math.radians(degrees)))
    if short_side <= 2.0 * sin_a * cos_a * long_side or abs(sin_a - cos_a) < 1e-10:
        x = 0.5 * short_side  # half-constrained: two corners touch the longer side
        return (x / sin_a, x / cos_a) if w >= h else (x / cos_a, x / sin_a)
    cos_2a = cos_a * cos_a - sin_a * sin_a
    return (w * cos_a - h * sin_a) / cos_2a, (h * cos_a - w * sin_a) / cos_2a


def rotate90(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Rotate by 90, 180 or 270 degrees (SSCD's Rotate90)."""
    return img.transpose((Image.ROTATE_90, Image.ROTATE_180, Image.ROTATE_270)[int(rng.integers(3))])


def random_resized_crop(
    img: Image.Image,
    size: int,
    rng: np.random.Generator,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
) -> Image.Image:
    """torchvision RandomResizedCrop (box as `random_resized_box`), cropped and resized to size×size in one
    bilinear pass with antialiasing."""
    return crop_resize(img, random_resized_box(img.width, img.height, rng, scale, ratio), size)


def random_resized_box(
    w: int,
    h: int,
    rng: np.random.Generator,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """torchvision RandomResizedCrop's box (x0, y0, x1, y1) in a w×h image: area uniform in `scale` × w·h, log
    aspect ratio uniform in `ratio`, 10 tries, then the centre crop clamped to `ratio`."""
    area = w * h
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return x, y, x + cw, y + ch
    in_ratio = w / h
    if in_ratio < min(ratio):
        cw, ch = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        cw, ch = int(round(h * max(ratio))), h
    else:
        cw, ch = w, h
    x, y = (w - cw) // 2, (h - ch) // 2
    return x, y, x + cw, y + ch


def crop_resize(img: Image.Image, box: tuple[int, int, int, int], size: int) -> Image.Image:
    """Crop `box` and resize it to size×size in one antialiased bilinear pass (PIL). Not albumentations' crop +
    resize: its INTER_LINEAR is 3× faster but not antialiased (aliasing, max |Δ| 53 levels) and its INTER_AREA
    is slower (scripts/bench/augment.py --albumentations)."""
    return img.resize((size, size), Image.BILINEAR, box=box, reducing_gap=2.0)


def perspective(img: Image.Image, rng: np.random.Generator, distortion_scale: float = 0.5) -> Image.Image:
    """torchvision RandomPerspective: each corner moves inwards by up to distortion_scale/2 of the side, same
    size, black fill, bilinear — torchvision's own path for PIL images (its corner draw, then PIL's perspective
    transform through `warp_to_corners`, the one warp the perspective ops share; pixel for pixel, tested).
    albumentations' Perspective draws its corners from a normal law: another distribution."""
    w, h = img.size
    dw, dh = int(distortion_scale * w / 2), int(distortion_scale * h / 2)

    def jitter(limit: int) -> int:
        return int(rng.integers(0, limit + 1))

    src = [(0, 0), (w - 1, 0), (w - 1, h - 1), (0, h - 1)]
    dst = [
        (jitter(dw), jitter(dh)),
        (w - 1 - jitter(dw), jitter(dh)),
        (w - 1 - jitter(dw), h - 1 - jitter(dh)),
        (jitter(dw), h - 1 - jitter(dh)),
    ]
    return warp_to_corners(img, src, dst, Image.BILINEAR)


def perspective_sigma(img: Image.Image, rng: np.random.Generator, sigma: float) -> Image.Image:
    """AugLy perspective_transform (corners moved by N(0, sigma) px), via the working equivalent."""
    return perspective_transform(img, sigma=sigma, rng=rng)


def pad(img: Image.Image, w_factor: float, h_factor: float, colour: Colour) -> Image.Image:
    """AugLy `pad`: int(w_factor·w) columns left and right, int(h_factor·h) rows top and bottom (one PIL call,
    8× faster than albumentations' pad with the conversions)."""
    left, top = int(w_factor * img.width), int(h_factor * img.height)
    return ImageOps.expand(img, border=(left, top, left, top), fill=colour)


def pad_square(img: Image.Image, colour: Colour) -> Image.Image:
    """AugLy `pad_square`: pad the short side (both ends) to make the image square."""
    w, h = img.size
    return pad(img, (h - w) / (2 * w), 0.0, colour) if w < h else pad(img, 0.0, (w - h) / (2 * h), colour)


def crop_fractions(img: Image.Image, x1: float, y1: float, x2: float, y2: float) -> Image.Image:
    """AugLy `crop` with fractional corners."""
    w, h = img.size
    box = (int(x1 * w), int(y1 * h), int(x2 * w), int(y2 * h))
    return img.crop(box) if box[2] > box[0] and box[3] > box[1] else img


# ---------------------------------------------------------------------------------------- compositing


def paste(base: Image.Image, top: Image.Image, size: float, opacity: float, x: float, y: float) -> Image.Image:
    """AugLy `overlay_image`: `top` scaled to size·(base height) keeping its aspect ratio, pasted at
    (x·w, y·h) with its alpha × opacity."""
    w, h = base.size
    top = top.resize(pasted_size(h, top.size, size), Image.BICUBIC)
    alpha = top.getchannel("A") if top.mode == "RGBA" else Image.new("L", top.size, 255)
    mask = alpha.point(lambda a: int(a * opacity))
    out = base.copy()
    out.paste(top.convert("RGB"), (int(w * x), int(h * y)), mask)
    return out


def pasted_size(base_height: int, top_size: tuple[int, int], size: float) -> tuple[int, int]:
    """(width, height) that `paste` scales `top` to: size·(base height), the aspect ratio kept, at least 1 px."""
    new_h = max(1, int(base_height * size))
    return max(1, int(top_size[0] * new_h / top_size[1])), new_h


def emoji(
    img: Image.Image,
    rng: np.random.Generator,
    size: tuple[float, float],
    opacity: tuple[float, float],
    inside: bool = True,
) -> Image.Image:
    """AugLy `overlay_emoji` with a random Twemoji from AugLy's assets (cached), size and opacity drawn
    uniformly and capped at 1; position uniform, kept inside the image when `inside`."""
    s = min(1.0, float(rng.uniform(*size)))
    limit = max(0.0, 1 - s) if inside else 1.0
    return paste(
        img,
        assets.emoji_image(assets.pick(rng, assets.emoji_files())),
        s,
        min(1.0, float(rng.uniform(*opacity))),
        float(rng.uniform(0, limit)),
        float(rng.uniform(0, limit)),
    )


def text(
    img: Image.Image,
    rng: np.random.Generator,
    lines: tuple[int, int],
    glyphs: tuple[int, int],
    font_size: Sequence[float],
    opacity: tuple[float, float] = (1.0, 1.0),
    x: tuple[float, float] = (0.0, 0.5),
    y: tuple[float, float] = (0.0, 0.5),
    discrete_sizes: bool = False,
    fit: bool = False,
    alphabet: str | None = None,
) -> Image.Image:
    """AugLy `overlay_text`: lines of random glyphs of a random AugLy font, font size a fraction of the short
    side (uniform in `font_size`, or one of its values with `discrete_sizes`), line pitch font size + 5 px,
    random colour, top-left corner uniform in `x`, `y`. Glyph counts are inclusive ranges; `fit` cuts each
    line where it would leave the image; `alphabet` draws the glyphs from that string (in a Latin font) instead
    of the font's whole glyph list. Unlike AugLy (which draws an RGBA fill onto the image, so its
    opacity is lost when converting back to RGB), `opacity` here is real alpha blending."""
    font_file = assets.pick(rng, assets.latin_fonts() if alphabet else assets.glyph_fonts())
    chars = alphabet or assets.printable_chars(font_file)
    fraction = float(assets.pick(rng, font_size)) if discrete_sizes else float(rng.uniform(*font_size))
    px = max(4, int(min(img.size) * fraction))
    font = assets.load_font(font_file, px)
    x0, y0 = float(rng.uniform(*x)) * img.width, float(rng.uniform(*y)) * img.height
    mask = Image.new("L", img.size, 0)
    draw = ImageDraw.Draw(mask)
    for i in range(int(rng.integers(lines[0], lines[1] + 1))):
        n = int(rng.integers(glyphs[0], glyphs[1] + 1))
        line = "".join(chars[int(j)] for j in rng.integers(0, len(chars), n))
        if fit and line:  # keep the glyphs that fit: cut at the average glyph width, then trim
            room = img.width - x0
            length = font.getlength(line)
            if length > room:
                line = line[: max(1, int(len(line) * room / length))]
                while len(line) > 1 and font.getlength(line) > room:
                    line = line[:-1]
        alpha = int(round(255 * float(rng.uniform(*opacity))))
        draw.text((x0, y0 + i * (px + 5)), line, fill=alpha, font=font)
    out = img.copy()
    out.paste(Image.new("RGB", img.size, random_colour(rng)), (0, 0), mask)
    return out


def overlay_with_other(
    img: Image.Image,
    other: Image.Image,
    rng: np.random.Generator,
    size: tuple[float, float],
    opacity: tuple[float, float],
    on_top_p: float = 0.5,
) -> Image.Image:
    """lyakaap's overlay (RECIPES §2.3): with probability `on_top_p` this image is pasted onto the other
    image, otherwise the other image is pasted onto this one; size, opacity and position uniform."""
    if rng.random() < on_top_p:
        base, top = other, img
    else:
        base, top = img, other
    s = float(rng.uniform(*size))
    return paste(base, top, s, float(rng.uniform(*opacity)), float(rng.uniform(0, 1 - s)), float(rng.uniform(0, 1 - s)))


def screenshot(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """AugLy `overlay_onto_screenshot` with its web or mobile template, drawn 50/50."""
    return overlay_onto_screenshot(img, str(assets.pick(rng, SCREENSHOT_TEMPLATES)))[0]


SCREENSHOT_TEMPLATES = ("web.png", "mobile.png")  # AugLy's screenshot templates


@functools.cache
def _screenshot_boxes(path: str) -> dict[str, list[int]]:
    """AugLy's template content boxes, read once per process (the op runs per training view)."""
    return json.loads(Path(path).read_text())


def overlay_onto_screenshot(img: Image.Image, template: str) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """AugLy `overlay_onto_screenshot` (AugLy's own function) with one of its templates, and the box (x0, y0,
    x1, y1) the image occupies in the result, from AugLy's arithmetic (scaled to fit the template's content
    box, centred). A sliver too thin to scale is padded square first."""
    import augly.image.functional as F  # imported here: a slow import that only this op needs

    folder = assets.augly_assets() / "screenshot_templates"
    bboxes = folder / "bboxes.json"
    bx0, by0, bx1, by1 = _screenshot_boxes(str(bboxes))[template]
    bw, bh = bx1 - bx0, by1 - by0
    factor = min(bw / img.width, bh / img.height)
    if min(int(img.width * factor), int(img.height * factor)) < 1:
        img = ImageOps.pad(img, (max(img.size),) * 2, color=(0, 0, 0))
        factor = min(bw / img.width, bh / img.height)
    sw, sh = int(img.width * factor), int(img.height * factor)
    out = F.overlay_onto_screenshot(img, template_filepath=str(folder / template), template_bboxes_filepath=str(bboxes))
    dx, dy = max(0, (bw - sw) // 2), max(0, (bh - sh) // 2)
    return out.convert("RGB"), (bx0 + dx, by0 + dy, bx0 + dx + sw, by0 + dy + sh)


def meme(img: Image.Image, rng: np.random.Generator, caption_height: tuple[float, float] = (0.15, 0.3)) -> Image.Image:
    """AugLy `meme_format` (working equivalent) with a random caption of 1-3 words, caption band a random
    fraction of the image height, white or random background."""
    words = assets.words(rng)
    height = max(11, int(img.height * float(rng.uniform(*caption_height))))
    bg = (255, 255, 255) if rng.random() < 0.7 else random_colour(rng)
    fg = (0, 0, 0) if sum(bg) > 380 else (255, 255, 255)
    return meme_format(img, text=words, text_color=fg, caption_height=height, meme_bg_color=bg)


def stripes(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """AugLy `overlay_stripes` with random width, angle, density, type, colour and opacity."""
    import augly.image.functional as F

    return F.overlay_stripes(
        img,
        line_width=float(rng.uniform(0.1, 0.8)),
        line_color=random_colour(rng),
        line_angle=float(rng.uniform(-90, 90)),
        line_density=float(rng.uniform(0.2, 0.8)),
        line_type=str(assets.pick(rng, ("solid", "dotted", "dashed"))),
        line_opacity=float(rng.uniform(0.3, 1.0)),
    ).convert("RGB")


# ---------------------------------------------------------------------------------------- photometric


def color_jitter(
    img: Image.Image, rng: np.random.Generator, brightness: float, contrast: float, saturation: float, hue: float
) -> Image.Image:
    """torchvision ColorJitter: factors uniform in [1−v, 1+v] (hue shift in [−v, v]), applied in random
    order. Brightness, contrast and saturation are albumentations' torchvision blends (lookup tables); the
    hue shift is `_shift_hue`."""
    a = np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
    for op in rng.permutation(4):
        if op == 0 and brightness > 0:
            a = alb_pixel.adjust_brightness_torchvision(a, rng.uniform(max(0.0, 1 - brightness), 1 + brightness))
        elif op == 1 and contrast > 0:
            a = alb_pixel.adjust_contrast_torchvision(a, rng.uniform(max(0.0, 1 - contrast), 1 + contrast))
        elif op == 2 and saturation > 0:
            a = alb_pixel.adjust_saturation_torchvision(a, rng.uniform(max(0.0, 1 - saturation), 1 + saturation))
        elif op == 3 and hue > 0:
            a = _shift_hue(a, rng.uniform(-hue, hue))
    return Image.fromarray(a)


def _shift_hue(a: np.ndarray, shift: float) -> np.ndarray:
    """torchvision's adjust_hue on OpenCV's full-range 8-bit HSV through a lookup table. Hand-written:
    albumentations' adjust_hue_torchvision is as fast but twice as far from torchvision's pixels (mean |Δ|
    0.55–0.73 against 0.27–0.70 levels, scripts/bench/augment.py --albumentations)."""
    hsv = cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2HSV_FULL)
    lut = ((np.arange(256) + int(round(shift * 255))) % 256).astype(np.uint8)
    hsv[..., 0] = cv2.LUT(hsv[..., 0], lut)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)


def grayscale(img: Image.Image) -> Image.Image:
    """ITU-R 601 luma in three channels (PIL: faster than albumentations' to_gray with the conversions)."""
    return img.convert("L").convert("RGB")


def pixelize(img: Image.Image, ratio: float) -> Image.Image:
    """AugLy `pixelization`: downscale by `ratio` and back up (PIL's default bicubic, as AugLy, pixel for pixel).
    Not albumentations' Downscale: OpenCV's bicubic downscale does not antialias (mean |Δ| 6 levels, max 158)."""
    w, h = img.size
    small = img.resize((max(1, int(w * ratio)), max(1, int(h * ratio))), Image.BICUBIC)
    return small.resize((w, h), Image.BICUBIC)


def shuffle_pixels(img: Image.Image, rng: np.random.Generator, factor: float) -> Image.Image:
    """AugLy `shuffle_pixels`: a random `factor` fraction of the pixels swap places among themselves.
    (AugLy's transform seeds numpy with a constant, so it shuffles the same positions every call; here
    the positions are random.) No albumentations op moves pixels this way."""
    a = np.array(img)
    flat = a.reshape(-1, a.shape[-1]) if a.ndim == 3 else a.reshape(-1, 1)
    chosen = rng.choice(flat.shape[0], size=int(factor * flat.shape[0]), replace=False)
    flat[chosen] = flat[rng.permutation(chosen)]
    return Image.fromarray(a)


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    """Re-encode as JPEG at `quality` (AugLy `encoding_quality`: PIL's encoder, pixel for pixel). Not
    albumentations' ImageCompression: OpenCV's encoder is no faster and gives other pixels (mean |Δ| 3 levels)."""
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=int(np.clip(quality, 0, 100)))
    buffer.seek(0)
    with Image.open(buffer) as out:
        return out.convert("RGB")


def blur(img: Image.Image, radius: float) -> Image.Image:
    """AugLy `blur`: a Gaussian of standard deviation `radius` (AugLy calls PIL's GaussianBlur, whose box-filter
    approximation of that Gaussian is 8× slower than albumentations' exact separable kernel; mean |Δ| 0.4 level)."""
    return gaussian_blur_sigma(img, radius)


def gaussian_blur_sigma(img: Image.Image, sigma: float) -> Image.Image:
    """torchvision GaussianBlur with standard deviation `sigma` (kernel ±3σ as OpenCV sizes it, reflected
    borders): albumentations' separable convolution."""
    if sigma <= 0:
        return img
    kernel = alb_blur.create_gaussian_kernel_1d(sigma, int(round(6 * sigma + 1)) | 1)
    return Image.fromarray(alb_pixel.separable_convolve(np.asarray(img), kernel))


def enhance(img: Image.Image, brightness: float, contrast: float, saturation: float) -> Image.Image:
    """AugLy `color_jitter`: PIL ImageEnhance brightness, contrast, then saturation (colour) factors, in that
    fixed order (AugLy's own calls; torchvision's ColorJitter is `color_jitter`)."""
    enhancers = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
    for enhancer, factor in zip(enhancers, (brightness, contrast, saturation)):
        img = enhancer(img).enhance(factor)
    return img


def sharpen(img: Image.Image, factor: float) -> Image.Image:
    """AugLy `sharpen` (PIL ImageEnhance.Sharpness; albumentations' Sharpen is another kernel)."""
    return ImageEnhance.Sharpness(img).enhance(factor)


def edge_enhance(img: Image.Image, more: bool) -> Image.Image:
    """PIL EDGE_ENHANCE or EDGE_ENHANCE_MORE."""
    return img.filter(ImageFilter.EDGE_ENHANCE_MORE if more else ImageFilter.EDGE_ENHANCE)


def opacity(img: Image.Image, level: float) -> Image.Image:
    """AugLy `opacity` as it ends up in an RGB image: a blend towards white with weight 1 − level."""
    return Image.blend(Image.new("RGB", img.size, (255, 255, 255)), img, level)


def channel_invert(img: Image.Image) -> Image.Image:
    """albumentations InvertImg."""
    return Image.fromarray(alb_pixel.invert(np.asarray(img)))


def channel_swap(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """albumentations ChannelShuffle with a permutation other than the identity."""
    order = (0, 1, 2)
    while order == (0, 1, 2):
        order = tuple(int(i) for i in rng.permutation(3))
    return Image.fromarray(alb_pixel.channel_shuffle(np.asarray(img), list(order)))


def channel_shift(img: Image.Image, rng: np.random.Generator, max_shift: int = 40) -> Image.Image:
    """albumentations RGBShift: a random offset in [−max_shift, max_shift] added to each channel, clipped."""
    shifts = rng.integers(-max_shift, max_shift + 1, 3)
    return Image.fromarray(albucore.add_vector(np.asarray(img), shifts.astype(np.float32), inplace=False))
