"""The calling convention shared by every post-process: ``fit(training)`` then ``transform(x, role)``.

``training`` holds the descriptors of training-set images (never references: RECIPES §1.5, "the scoring of
images should be independent"). ``role`` is ``"query"``, ``"reference"`` or ``"training"``; a chain passes
the training descriptors through each step (role ``"training"``) so that the next step is fitted on them.
For ``"training"``, a step that searches the training set leaves each row's own entry out of its neighbours
(a query or reference has no copy of itself in that set either).
"""

from __future__ import annotations

import numpy as np

ROLES = ("query", "reference", "training")


class PostProcess:
    """Base class: subclasses set `label` and override `transform` (and `fit` if they learn anything)."""

    label = "postprocess"
    needs_training = True  # fit() uses the training descriptors
    required_metric: str | None = None  # "ip" when the output is only meaningful under inner-product search
    must_be_last = False  # changes the meaning of the vectors (e.g. adds a score dimension)

    def __init__(self) -> None:
        self._training: np.ndarray | None = None

    def fit(self, training: np.ndarray) -> PostProcess:
        self._training = as_matrix(training, "training descriptors")
        if len(self._training) == 0:
            raise ValueError(f"{self.describe()}: needs training descriptors, got none")
        return self

    def transform(self, x: np.ndarray, role: str) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> str:
        return self.label

    def _check(self, x: np.ndarray, role: str) -> np.ndarray:
        if role not in ROLES:
            raise ValueError(f"{self.describe()}: role must be one of {ROLES}, got {role!r}")
        x = as_matrix(x, f"{role} descriptors")
        if self.needs_training:
            if self._training is None:
                raise RuntimeError(f"{self.describe()}: call fit(training descriptors) before transform")
            if x.shape[1] != self._training.shape[1]:
                raise ValueError(
                    f"{self.describe()}: {role} descriptors have {x.shape[1]} dims, the training "
                    f"descriptors it was fitted on {self._training.shape[1]}"
                )
            if role == "training" and len(x) != len(self._training):
                raise ValueError(
                    f"{self.describe()}: role 'training' expects the {len(self._training)} fitted "
                    f"training descriptors, got {len(x)} rows"
                )
        return x

    def __repr__(self) -> str:
        return self.describe()


def as_matrix(x: object, name: str) -> np.ndarray:
    """A C-contiguous float32 (n, d) array of finite numbers."""
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, dim), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        row = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
        raise ValueError(f"{name} hold a non-finite value (NaN or inf) in row {row}")
    return arr


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
