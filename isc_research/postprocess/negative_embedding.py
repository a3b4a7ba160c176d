"""lyakaap's DBA on the training set + negative-embedding subtraction (RECIPES §2.4).

fit: every training descriptor t is replaced by DBA, normalise(Σ_j s_j³ · t_j) over its `dba_k` nearest
training descriptors t_j (inner product s_j; itself included, as a self-search returns it first).
transform (queries and references alike): `iterations` times, x ← normalise(x − β · mean of its k nearest
DBA'd training descriptors). Recipe: k=10, β=0.35, 1 iteration, dba_k=10, power 3; dba_k=0 skips DBA.
"""

from __future__ import annotations

import numpy as np

from isc_research.postprocess.base import PostProcess, l2_normalize
from isc_research.postprocess.neighbours import top_k


class NegativeEmbeddingSubtraction(PostProcess):
    label = "neg_emb"

    def __init__(
        self, k: int = 10, beta: float = 0.35, iterations: int = 1, dba_k: int = 10, dba_power: float = 3.0
    ) -> None:
        super().__init__()
        if k < 1 or iterations < 1 or dba_k < 0:
            raise ValueError(
                f"neg_emb needs k >= 1, iterations >= 1, dba_k >= 0; got k={k}, iterations={iterations}, dba_k={dba_k}"
            )
        self.k, self.beta, self.iterations, self.dba_k, self.dba_power = k, beta, iterations, dba_k, dba_power
        self.bank: np.ndarray | None = None

    def fit(self, training: np.ndarray) -> NegativeEmbeddingSubtraction:
        super().fit(training)
        t = self._training
        if self.dba_k:
            sims, idx = top_k(t, t, self.dba_k)
            weights = np.power(sims.astype(np.float64), self.dba_power)
            t = l2_normalize(np.einsum("nk,nkd->nd", weights, t[idx].astype(np.float64)))
        self.bank = np.ascontiguousarray(t, dtype=np.float32)
        return self

    def transform(self, x: np.ndarray, role: str) -> np.ndarray:
        x = self._check(x, role)
        for _ in range(self.iterations):
            _, idx = top_k(self.bank, x, self.k, exclude_self=role == "training")
            x = l2_normalize(x - self.beta * self.bank[idx].mean(axis=1))
        return x

    def describe(self) -> str:
        dba = f"dba{self.dba_k}^{self.dba_power:g}+" if self.dba_k else ""
        return f"{dba}neg_emb(k={self.k}, β={self.beta:g}, it={self.iterations})"
