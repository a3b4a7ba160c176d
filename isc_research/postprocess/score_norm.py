"""Score normalisation by the extra-dimension trick (ISC baseline RECIPES §1.5; SSCD §8).

s(q) = similarity of q's n-th nearest training descriptor (`reduction: min`, ISC: factor 2, n 10) or the
mean of its top n (`mean`, SSCD "1.0[0,2]": factor 1, n 3). Queries get the extra dimension −factor·s(q),
references a constant 1, so q'·r' = q·r − factor·s(q): the normalised score, under inner-product search
(`metric: ip`, the recipe; the chain then searches by inner product).

`metric: l2` (our addition) makes the same scores usable by the descriptor track, whose scorer searches by
squared L2: queries get one more dimension, √(C − ‖q‖² − factor²·s²), references 0, with C = 1 + factor²;
then every query has norm² C and ‖q'−r'‖² = C + 2 − 2(q·r − factor·s(q)), a decreasing function of the
normalised score shared by all queries. It needs unit-norm inputs (put `l2` before it): then |s| ≤ 1 and
the square root exists. Either way the step adds dimensions and must be last in its chain.
"""

from __future__ import annotations

import numpy as np

from isc_research.postprocess.base import PostProcess
from isc_research.postprocess.neighbours import top_k

_REDUCTIONS = ("min", "mean")


class ScoreNormalization(PostProcess):
    label = "score_norm"
    must_be_last = True

    def __init__(self, factor: float = 2.0, n: int = 10, reduction: str = "min", metric: str = "ip") -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(
                f"score_norm reduction must be one of {_REDUCTIONS} (ISC's 'avg' is 'mean'), got {reduction!r}"
            )
        if metric not in ("ip", "l2"):
            raise ValueError(
                f"score_norm metric must be 'ip' (the recipe) or 'l2' (descriptor-track form), got {metric!r}"
            )
        if n < 1:
            raise ValueError(f"score_norm needs n >= 1, got {n}")
        self.factor, self.n, self.reduction, self.metric = float(factor), n, reduction, metric
        self.required_metric = "ip" if metric == "ip" else None

    def query_offsets(self, q: np.ndarray) -> np.ndarray:
        """s(q) for every query row."""
        sims, _ = top_k(self._training, q, self.n)
        return sims[:, -1].astype(np.float64) if self.reduction == "min" else sims.mean(axis=1, dtype=np.float64)

    def transform(self, x: np.ndarray, role: str) -> np.ndarray:
        x = self._check(x, role)
        if role == "training":
            raise ValueError(f"{self.describe()} adds a score dimension and must be the last step of its chain")
        extra = 1 if self.metric == "ip" else 2
        out = np.zeros((len(x), x.shape[1] + extra), np.float32)
        out[:, : x.shape[1]] = x
        if role == "reference":
            out[:, x.shape[1]] = 1.0
            return out
        s = self.query_offsets(x)
        out[:, x.shape[1]] = -self.factor * s
        if self.metric == "l2":
            norms2 = np.einsum("nd,nd->n", x.astype(np.float64), x.astype(np.float64))
            if np.abs(norms2 - 1).max(initial=0) > 1e-3:
                raise ValueError(
                    f"{self.describe()}: the l2 form needs unit-norm descriptors (a query has norm² "
                    f"{norms2[np.abs(norms2 - 1).argmax()]:.4f}); put an `l2` step before it"
                )
            c = 1.0 + self.factor**2
            out[:, x.shape[1] + 1] = np.sqrt(np.maximum(c - norms2 - (self.factor * s) ** 2, 0.0))
        return out

    def describe(self) -> str:
        return f"score_norm({self.factor:g}·{self.reduction}@{self.n}, {self.metric})"
