"""VisionForce's descriptor stretching (RECIPES §4): q' = factor · mean(top-k q·t) · q for queries only.

t runs over the training descriptors (inner product). Recipe: factor 2.5, k=5 (the code writes it as
factor −2.5 times the negated mean; same result). References are unchanged.
"""

from __future__ import annotations

import numpy as np

from isc_research.postprocess.base import PostProcess
from isc_research.postprocess.neighbours import top_k


class Stretching(PostProcess):
    label = "stretch"

    def __init__(self, factor: float = 2.5, k: int = 5) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"stretch needs k >= 1, got {k}")
        self.factor, self.k = factor, k

    def transform(self, x: np.ndarray, role: str) -> np.ndarray:
        x = self._check(x, role)
        if role != "query":
            return x
        sims, _ = top_k(self._training, x, self.k)
        return (self.factor * sims.mean(axis=1, dtype=np.float64))[:, None].astype(np.float32) * x

    def describe(self) -> str:
        return f"stretch({self.factor:g}·top{self.k})"
