"""Classical copy-detection baselines as descriptor extractors for the isc-eval harness.

Each maps an image to a float vector searched with squared L2 like a learnt descriptor:
* ``phash``: imagehash's perceptual hash (DCT of a 32×32 grey image, 8×8 low frequencies vs their median),
  64 bits as ±1, so ‖a − b‖² = 4 × Hamming distance;
* ``pdq``: Meta's PDQ hash (pdqhash bindings), 256 bits as ±1 (4 × Hamming again);
* ``thumbnail``: the grey image resized to side × side (16 → 256 dims), mean removed, L2-normalised.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from isc_research.extras import require

BASELINES = ("phash", "pdq", "thumbnail")


def _bits_to_signs(bits: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.where(np.asarray(bits, dtype=bool).ravel(), 1.0, -1.0).astype(np.float32))


class PHash:
    def __init__(self, hash_size: int = 8) -> None:
        require("imagehash", "baseline=phash")
        self.hash_size = hash_size

    def __call__(self, image: Image.Image) -> torch.Tensor:
        import imagehash

        return _bits_to_signs(imagehash.phash(image, hash_size=self.hash_size).hash)


class PDQ:
    def __init__(self) -> None:
        require("pdqhash", "baseline=pdq")

    def __call__(self, image: Image.Image) -> torch.Tensor:
        import pdqhash

        bits, _quality = pdqhash.compute(np.asarray(image.convert("RGB")))
        return _bits_to_signs(bits)


class GreyThumbnail:
    def __init__(self, side: int = 16) -> None:
        if side < 2:
            raise ValueError(f"thumbnail side must be >= 2, got {side}")
        self.side = side

    def __call__(self, image: Image.Image) -> torch.Tensor:
        grey = np.asarray(image.convert("L").resize((self.side, self.side), Image.BILINEAR), np.float32).ravel()
        grey = grey - grey.mean()
        norm = np.linalg.norm(grey)
        return torch.from_numpy(grey / norm if norm > 0 else grey)


class BaselineExtractor:
    """The `extract_to_hdf5` interface around one hash/thumbnail function (runs in the data workers)."""

    def __init__(self, name: str, **params) -> None:
        makers = {"phash": PHash, "pdq": PDQ, "thumbnail": GreyThumbnail}
        if name not in makers:
            raise ValueError(f"baseline={name!r} is unknown; choose one of {', '.join(BASELINES)}")
        self.name = name
        self.params = params
        self.transform = makers[name](**params)

    def embed(self, views: list) -> np.ndarray:
        """views[0] (one scale: every hash has one size): the (rows, stacked vectors) groups of
        isc_research.extract.collate_views (isc-eval), or a list of vectors (isc-match's views), as ModelExtractor
        takes."""
        if isinstance(views[0][0], torch.Tensor):  # one vector per view, in order (one size: no grouping)
            return torch.stack(views[0]).numpy()
        rows = torch.cat([r for r, _ in views[0]])
        vectors = torch.cat([v for _, v in views[0]])
        return vectors[torch.argsort(rows)].numpy()

    def fingerprint(self) -> dict:
        return {"kind": "baseline", "name": self.name, **self.params}
