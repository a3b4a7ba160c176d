"""S-square's query "sample normalisation" (push-away, RECIPES §3.3); references are unchanged.

Per query q: its K nearest training descriptors t_j (cosine); d = normalise(mean_j (q − t_j)/‖q − t_j‖);
c = mean cosine to the top-3 of them; q' = q + strength·√c·d, not re-normalised. Recipe: K=100,
strength 1.8, c over 3 neighbours. A negative c (no similar training image) gives no push (√max(c, 0)).

`normalize` says how the differences q − t_j are made unit before their mean:
  vectors     each difference vector by its own norm — the formula of the write-up (RECIPES §3.3);
  neighbours  each coordinate by its norm over the K neighbours (numpy axis=1 of the queries × K × dims array)
              — what S-square's phase-1 and phase-2 notebooks compute, hence what scored their 0.7267 (the
              S-square presets use it). The two push directions differ by about 15° on average.
"""

from __future__ import annotations

import numpy as np

from isc_research.postprocess.base import PostProcess, l2_normalize
from isc_research.postprocess.neighbours import top_k

_ROWS = 2048
NORMALIZE = ("vectors", "neighbours")


class PushAway(PostProcess):
    label = "push_away"

    def __init__(self, k: int = 100, strength: float = 1.8, c_neighbours: int = 3, normalize: str = "vectors") -> None:
        super().__init__()
        if k < 1 or not 1 <= c_neighbours <= k:
            raise ValueError(
                f"push_away needs k >= 1 and 1 <= c_neighbours <= k, got k={k}, c_neighbours={c_neighbours}"
            )
        if normalize not in NORMALIZE:
            raise ValueError(f"push_away normalize={normalize!r} is unknown; use one of {NORMALIZE}")
        self.k, self.strength, self.c_neighbours, self.normalize = k, strength, c_neighbours, normalize

    def fit(self, training: np.ndarray) -> PushAway:
        super().fit(training)
        self._unit = l2_normalize(self._training)
        return self

    def transform(self, x: np.ndarray, role: str) -> np.ndarray:
        x = self._check(x, role)
        if role != "query":
            return x
        out = np.empty_like(x)
        for start in range(0, len(x), _ROWS):
            q = x[start : start + _ROWS]
            sims, idx = top_k(self._unit, l2_normalize(q), self.k)
            diff = q[:, None, :] - self._training[idx]  # (n, K, d)
            axis = 2 if self.normalize == "vectors" else 1
            diff /= np.maximum(np.linalg.norm(diff, axis=axis, keepdims=True), 1e-12)
            direction = l2_normalize(diff.mean(axis=1))
            c = sims[:, : self.c_neighbours].mean(axis=1)
            out[start : start + _ROWS] = q + (self.strength * np.sqrt(np.maximum(c, 0.0)))[:, None] * direction
        return out

    def describe(self) -> str:
        form = "" if self.normalize == "vectors" else ", per neighbour axis"
        return f"push_away(K={self.k}, {self.strength:g}·√c{self.c_neighbours}{form})"
