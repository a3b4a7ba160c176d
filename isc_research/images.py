"""Robust image loading shared by training, evaluation and the dataset builder.

`load_image` always returns an 8-bit RGB ``PIL.Image.Image`` with the EXIF orientation applied,
whatever the file holds (CMYK, palette, alpha, 16-bit, 1-bit, ...).  Every failure (missing,
empty, corrupt or truncated file, decompression bomb) raises `ImageLoadError`, whose message
names the file, the reason and what to do about it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["IMAGE_SUFFIXES", "ImageLoadError", "load_image", "image_size", "scan_files", "to_rgb", "warn_unused"]

# The one list of image file types that every reader accepts: dataset folders (isc_research.data.records), isc-search
# and
# isc-make-dataset --source. PIL decodes them all; a GIF (animated or not) gives its first frame, JFIF is JPEG.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jfif", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")

_WHITE = (255, 255, 255)
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_ROTATED_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_EXIF_ORIENTATION = 0x0112


class ImageLoadError(ValueError):
    """An image file could not be read; ``path``, ``reason`` and ``hint`` say which, why, and what to do.

    ``ImageLoadError(path, reason, hint)`` builds the message; ``ImageLoadError(message)`` (ValueError style,
    e.g. to re-raise with more context) keeps ``message`` as is, with ``path`` None.
    """

    def __init__(self, path: str | os.PathLike, reason: str | None = None, hint: str = "") -> None:
        self._args = (path, reason, hint)
        if reason is None:
            self.path, self.reason, self.hint = None, str(path), hint
            super().__init__(str(path))
            return
        self.path, self.reason, self.hint = str(path), reason, hint
        message = f"cannot load image '{self.path}': {reason}"
        super().__init__(f"{message}. {hint}" if hint else message)

    def __reduce__(self):  # keep it picklable across worker processes
        return (type(self), self._args)


def _scale_to_uint8(arr: np.ndarray, mode: str, fmt: str | None) -> np.ndarray:
    """Map a high-bit-depth single-channel array to 0..255 by scaling (never by clipping)."""
    if mode.startswith("I;16") or (mode == "I" and fmt == "PNG"):
        # 16-bit data: 0..65535 -> 0..255 (PNG 16-bit grey may open as mode "I").
        return np.round(arr.astype(np.float64) / 257.0).astype(np.uint8)
    arr = arr.astype(np.float64)
    if mode == "F" and arr.size and 0.0 <= arr.min() and arr.max() <= 1.0:
        return np.round(arr * 255.0).astype(np.uint8)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if 0 <= lo and hi <= 255 and mode != "F":
        return arr.astype(np.uint8)
    if 0 <= lo and hi <= 65535 and mode != "F":
        return np.round(arr / 257.0).astype(np.uint8)
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def to_rgb(im: Image.Image, background: tuple[int, int, int] = _WHITE) -> Image.Image:
    """Convert any PIL image to 8-bit RGB; transparency is composited onto ``background``."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "P":
        if "transparency" not in im.info and (im.palette is None or im.palette.mode != "RGBA"):
            return im.convert("RGB")
        im, mode = im.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        out = Image.new("RGB", im.size, background)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    if mode in ("L", "1", "CMYK", "YCbCr", "RGBX", "HSV"):
        return im.convert("RGB")
    if mode.startswith("I") or mode == "F":
        grey = _scale_to_uint8(np.asarray(im), mode, im.format)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "LAB":
        from PIL import ImageCms

        srgb, lab = ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB")
        return ImageCms.profileToProfile(im, lab, srgb, outputMode="RGB")
    return im.convert("RGB")


def draft_floor(draft_size: int | None, *sides: int) -> int | None:
    """The draft size to decode with: `draft_size`, raised to the largest side the image will be resized to, so
    that reduced-size decoding saves time without ever upsampling (a 512-px eval with draft_size 256 would)."""
    return None if not draft_size else max([int(draft_size), *(int(s) for s in sides)])


def load_image(path: str | os.PathLike, draft_size: int | None = None) -> Image.Image:
    """Load ``path`` fully as an 8-bit RGB image with its EXIF orientation applied.

    ``draft_size``: for JPEGs, let the decoder shrink by 1/2, 1/4 or 1/8 while keeping both sides
    >= ``draft_size`` (much faster for big photos); other formats are decoded at full size.
    Raises `ImageLoadError` for missing, empty, corrupt or truncated files and decompression bombs.
    """
    p = Path(path)
    if not p.exists():
        raise ImageLoadError(p, "file does not exist", "Check the path and the current directory.")
    if not p.is_file():
        raise ImageLoadError(p, "not a regular file", "Pass the path of an image file.")
    if p.stat().st_size == 0:
        raise ImageLoadError(p, "file is empty (0 bytes)", "Re-download or re-export it, or remove it.")
    try:
        with Image.open(p) as im:
            if draft_size and im.format == "JPEG":
                im.draft("RGB", (int(draft_size), int(draft_size)))
            im.load()
            oriented = ImageOps.exif_transpose(im)
            return to_rgb(oriented if oriented is not None else im)
    except Image.DecompressionBombError as e:
        raise ImageLoadError(
            p,
            f"decompression bomb ({e})",
            "If the file is trusted, raise PIL.Image.MAX_IMAGE_PIXELS before loading it.",
        ) from None
    except UnidentifiedImageError:
        raise ImageLoadError(
            p,
            "not a recognised image format (corrupt data?)",
            "Re-download or re-export it, or remove it.",
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        reason = "file is truncated" if "truncated" in str(e).lower() else f"corrupt image data ({e})"
        raise ImageLoadError(p, reason, "Re-download or re-export it, or remove it.") from None


def image_size(path: str | os.PathLike, draft_size: int | None = None) -> tuple[int, int]:
    """(width, height) as `load_image` (with the same `draft_size`) would return it, read from the header only
    (no decoding: PIL's JPEG draft only reconfigures the decoder)."""
    p = Path(path)
    if not p.is_file():
        raise ImageLoadError(p, "file does not exist", "Check the path and the current directory.")
    try:
        with Image.open(p) as im:
            if draft_size and im.format == "JPEG":
                im.draft("RGB", (int(draft_size), int(draft_size)))
            w, h = im.size
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Image.DecompressionBombError as e:
        raise ImageLoadError(p, f"decompression bomb ({e})", "Raise PIL.Image.MAX_IMAGE_PIXELS if trusted.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageLoadError(p, f"unreadable image header ({e})", "Re-download or re-export it.") from None
    return (h, w) if orientation in _ROTATED_ORIENTATIONS else (w, h)


def fit_long_side(
    img: Image.Image, max_side: int, resample: int = Image.LANCZOS, reducing_gap: float | None = None
) -> Image.Image:
    """`img` scaled down so that its longer side is at most `max_side` (unchanged if it already fits).
    `reducing_gap` (e.g. 2.0): PIL first box-reduces by an integer factor, much faster for big shrinks."""
    if max(img.size) <= max_side:
        return img
    s = max_side / max(img.size)
    return img.resize(
        (max(1, round(img.width * s)), max(1, round(img.height * s))), resample, reducing_gap=reducing_gap
    )


def scan_files(paths: Iterable[str | os.PathLike | os.DirEntry]) -> tuple[list[Path], list[Path], list[Path]]:
    """(image files, other files, broken links) of `paths` (folders are skipped): images by IMAGE_SUFFIXES.
    os.scandir entries are taken as they are (their file type is cached: no extra stat per file)."""
    images, others, broken = [], [], []
    for item in paths:
        entry = item if isinstance(item, os.DirEntry) else Path(item)
        p = Path(entry.path) if isinstance(entry, os.DirEntry) else entry
        if entry.is_file():
            (images if p.suffix.lower() in IMAGE_SUFFIXES else others).append(p)
        elif entry.is_symlink() and not entry.is_dir():
            broken.append(p)
    return images, others, broken


def warn_unused(where: str | os.PathLike, others: list, broken: list, logger: logging.Logger | None = None) -> None:
    """One warning each for the files that are not read (not an accepted image type) and the broken links, with
    their count and first names: nothing is dropped without a word."""
    logger = logger or logging.getLogger(__name__)

    def names(paths: list) -> str:
        return ", ".join(Path(p).name for p in paths[:5]) + (" ..." if len(paths) > 5 else "")

    if others:
        logger.warning(
            "%s: %d files are not images of an accepted type (%s) and are not used: %s",
            where,
            len(others),
            " ".join(IMAGE_SUFFIXES),
            names(others),
        )
    if broken:
        logger.warning(
            "%s: %d broken links (their target is missing) are not used: %s", where, len(broken), names(broken)
        )
