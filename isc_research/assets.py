"""Drawing assets shipped inside installed packages — AugLy's Twemoji, fonts (with their glyph lists) and
screenshot templates, and the sample photos of scikit-image, scikit-learn and matplotlib — plus the small
random pickers (words, colours) that the mini-DISC builder, its edits and the augmentation ops share.
Everything read from disk is cached per process."""

from __future__ import annotations

import importlib.util
import pickle
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageFont

WORDS = (
    "SALE",
    "hello",
    "summer",
    "2021",
    "travel",
    "NEW",
    "photo",
    "best day",
    "cats",
    "coffee",
    "sunset",
    "wow",
    "love",
    "weekend",
    "city",
    "news",
    "garden",
    "free",
    "open",
    "music",
    "party",
    "home",
    "art",
    "ocean",
    "team",
    "go!",
    "food",
    "OMG",
    "retro",
    "vibes",
    "look",
    "this",
    "is",
    "fine",
    "me",
    "today",
)
_LATIN_FONT_PREFIXES = (
    "Impact",
    "Raleway-",
    "Montserrat-",
    "OpenSans-",
    "IBMPlexSans-",
    "IBMPlexSerif-",
    "SourceSansPro-",
    "Ubuntu-",
    "NotoSans-Regular",
    "NotoSerif-Regular",
    "Titillium-",
    "Quicksand-",
    "PlayfairDisplay-",
    "Lobster",
    "Pacifico",
    "Chunkfive",
    "LeagueSpartan",
    "KaushanScript",
    "DancingScript",
    "OstrichSans-",
)


def package_dir(package: str, *parts: str) -> Path | None:
    """A folder inside an installed package, or None if the package is not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)), *parts)


def augly_assets() -> Path | None:
    d = package_dir("augly", "assets")
    return d if d is not None and d.is_dir() else None


@lru_cache(maxsize=1)
def emoji_files() -> tuple[str, ...]:
    d = augly_assets()
    return tuple(str(p) for p in sorted((d / "twemojis").rglob("*.png"))) if d else ()


@lru_cache(maxsize=256)
def emoji_image(path: str) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGBA")


@lru_cache(maxsize=1)
def glyph_fonts() -> tuple[str, ...]:
    """AugLy fonts that have the glyph list (.pkl) `overlay_text` needs."""
    d = augly_assets()
    return tuple(str(p) for p in sorted((d / "fonts").glob("*.ttf")) if p.with_suffix(".pkl").is_file()) if d else ()


@lru_cache(maxsize=1)
def latin_fonts() -> tuple[str, ...]:
    return tuple(f for f in glyph_fonts() if Path(f).name.startswith(_LATIN_FONT_PREFIXES))


@lru_cache(maxsize=128)
def load_font(path: str | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.truetype(path, size) if path else ImageFont.load_default(size)


@lru_cache(maxsize=64)
def printable_glyphs(font_file: str) -> tuple[int, ...]:
    """Indices into the font's AugLy glyph list that are printable (a CR there crashes libraqm)."""
    with open(Path(font_file).with_suffix(".pkl"), "rb") as f:
        chars = pickle.load(f)
    return tuple(i for i, c in enumerate(chars) if c >= 0x20 and not 0x7F <= c < 0xA0 and chr(c).isprintable())


@lru_cache(maxsize=64)
def printable_chars(font_file: str) -> tuple[str, ...]:
    """The printable characters of the font's AugLy glyph list."""
    with open(Path(font_file).with_suffix(".pkl"), "rb") as f:
        chars = pickle.load(f)
    return tuple(chr(chars[i]) for i in printable_glyphs(font_file))


def pick(rng: np.random.Generator, items: Sequence):
    return items[int(rng.integers(len(items)))]


def colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, 3))


def words(rng: np.random.Generator, max_words: int = 3) -> str:
    return " ".join(pick(rng, WORDS) for _ in range(int(rng.integers(1, max_words + 1))))
