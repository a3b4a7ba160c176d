"""L2 normalisation of every descriptor (after PCA-whitening: SSCD's ``PCAW,L2norm``, S-square's ensemble)."""

from __future__ import annotations

import numpy as np

from isc_research.postprocess.base import PostProcess, l2_normalize


class L2Normalize(PostProcess):
    label = "l2"
    needs_training = False

    def fit(self, training: np.ndarray) -> L2Normalize:
        return self

    def transform(self, x: np.ndarray, role: str) -> np.ndarray:
        return l2_normalize(self._check(x, role))
