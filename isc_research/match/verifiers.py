"""Verifiers: objects with ``score_pairs(queries, references) -> np.ndarray`` (one float per pair, higher =
more likely a copy) and a ``name``; `isc-match` builds one from the ``verifier`` config group (Hydra
``_target_``). `isc_research.match.local.LocalFeatureVerifier` (SIFT/ORB) is one; `NoVerifier` skips verification.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["NoVerifier", "check_verifier"]


class NoVerifier:
    """No verification: `isc-match` keeps the descriptor score and loads no images."""

    name = "none"

    def score_pairs(self, queries: list[Image.Image], references: list[Image.Image]) -> np.ndarray:
        return np.zeros(len(queries), np.float64)


def check_verifier(verifier: object) -> None:
    """Fail before any work when the configured object does not follow the verifier convention."""
    if not callable(getattr(verifier, "score_pairs", None)) or not isinstance(getattr(verifier, "name", None), str):
        raise TypeError(
            f"the configured verifier {type(verifier).__name__} must have score_pairs(queries, references) "
            "-> np.ndarray and a str attribute name (see isc_research/match/verifiers.py)"
        )
