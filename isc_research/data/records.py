"""Image records and the DISC21 folder layout (query / reference / training)."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from isc_research.images import scan_files, warn_unused

log = logging.getLogger(__name__)

SPLITS = ("query", "reference", "training")
# ASCII digits only: `\d` would accept e.g. full-width digits, which pass here and fail later (the HDF5
# submission stores ids as ASCII)
_ID_PATTERN = {
    "query": re.compile(r"^Q[0-9]{5,}$"),
    "reference": re.compile(r"^R[0-9]{6,}$"),
    "training": re.compile(r"^T[0-9]{6,}$"),
}


@dataclass(frozen=True)
class ImageRecord:
    """One image of a split; `id` is the file name without extension, as in the ISC2021 formats. `crop`: the
    part of the image to use instead of the whole, as fractions (x0, y0, x1, y1) of its width and height
    (a detected query crop, see isc_research.detect.query_crop); None = the whole image."""

    id: str
    split: str
    path: Path
    crop: tuple[float, float, float, float] | None = None


def layout_help(root: Path, dirs: dict[str, str], ground_truth: str | None) -> str:
    lines = [f"Expected DISC21 layout under {root}:"]
    examples = {"query": "Q00000.jpg", "reference": "R000000.jpg", "training": "T000000.jpg"}
    for split in SPLITS:
        if dirs.get(split):
            lines.append(f"  {dirs[split]}/{examples[split]} ...   ({split} images)")
    if ground_truth:
        lines.append(f"  {ground_truth}   (CSV with header query_id,reference_id; empty reference = no match)")
    return "\n".join(lines)


def list_split(root: Path, pattern: str, split: str, *, help_text: str) -> list[ImageRecord]:
    """Records of every image in the folders matching `pattern` (a glob relative to root), sorted by id."""
    folders = sorted(p for p in root.glob(pattern) if p.is_dir())
    if not folders:
        raise FileNotFoundError(f"No {split} folder matches {pattern!r} in {root}.\n{help_text}")
    records: dict[str, ImageRecord] = {}
    id_pattern = _ID_PATTERN[split]
    for folder in folders:
        with os.scandir(folder) as entries:
            images, others, broken = scan_files(entries)
        warn_unused(folder, others, broken, log)  # never dropped without a word
        for path in images:
            if not id_pattern.match(path.stem):
                raise ValueError(
                    f"{path}: file name {path.name!r} is not a DISC21 {split} id "
                    f"(expected e.g. {id_pattern.pattern}). Move foreign files out of {folder}."
                )
            if path.stem in records:
                raise ValueError(f"{split} id {path.stem} appears twice: {records[path.stem].path} and {path}")
            records[path.stem] = ImageRecord(path.stem, split, path)
    if not records:
        raise FileNotFoundError(f"The {split} folder(s) {[str(f) for f in folders]} contain no images.\n{help_text}")
    return [records[k] for k in sorted(records)]
