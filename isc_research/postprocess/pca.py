"""PCA and PCA-whitening learnt on training descriptors (RECIPES §1.6, §3.3, §8).

y = diag(λ)^p · Vᵀ (x − μ): μ the training mean, V the top-`dim` eigenvectors of the training covariance
(1/n normalisation), λ their eigenvalues, p = `eigen_power` (0: plain PCA, −0.5: whitening, as faiss
``PCAMatrix(d_in, d_out, eigen_power=-0.5)`` used by the ISC baseline and S-square). faiss' PCAMatrix takes
λ from the scatter matrix (Σ (x−μ)(x−μ)ᵀ, no 1/n), so its whitened output is ours divided by √n: the same
up to one global factor, which the usual L2 normalisation afterwards removes. Ours has unit variance per
component, so later steps with absolute constants (push-away's 1.8·√c) see the same scale whatever n is.

``max_training``: fit on a random subset of that many training descriptors, drawn as D²LV drew its PCA
images (``np.random.RandomState(seed).choice(n, size, replace=False)`` over the training list, seed 123, in
its ``extract_features.py``; 20k images, RECIPES §5.3). Only the fit is subsampled: later steps of the chain
(e.g. score normalisation) still see every training descriptor, transformed.
"""

from __future__ import annotations

import numpy as np

from isc_research.postprocess.base import PostProcess

_CHUNK = 65536


class PCA(PostProcess):
    label = "pca"

    def __init__(
        self,
        dim: int | None = None,
        whiten: bool = False,
        eigen_power: float | None = None,
        max_training: int | None = None,
        seed: int = 123,
    ) -> None:
        super().__init__()
        if dim is not None and dim < 1:
            raise ValueError(f"pca dim must be >= 1 or null (keep the input dimension), got {dim}")
        if max_training is not None and int(max_training) < 2:
            raise ValueError(f"pca max_training must be >= 2 or null (every training descriptor), got {max_training}")
        self.max_training = None if max_training is None else int(max_training)
        self.seed = int(seed)
        self.dim = dim
        self.whiten = whiten
        self.eigen_power = (-0.5 if whiten else 0.0) if eigen_power is None else float(eigen_power)
        self.mean: np.ndarray | None = None
        self.projection: np.ndarray | None = None  # (d_in, dim), eigenvector columns scaled by λ^p
        self.eigenvalues: np.ndarray | None = None

    def fit(self, training: np.ndarray) -> PCA:
        super().fit(training)
        x = self._training
        if self.max_training is not None and len(x) > self.max_training:
            x = x[np.random.RandomState(self.seed).choice(len(x), size=self.max_training, replace=False)]
        n, d_in = x.shape
        dim = d_in if self.dim is None else self.dim
        if dim > d_in:
            raise ValueError(f"{self.describe()}: cannot keep {dim} dims of {d_in}-d descriptors; set dim <= {d_in}")
        if n < 2:
            raise ValueError(f"{self.describe()}: needs at least 2 training descriptors, got {n}")
        mean = x.mean(axis=0, dtype=np.float64)
        cov = np.zeros((d_in, d_in))
        for start in range(0, n, _CHUNK):
            c = x[start : start + _CHUNK].astype(np.float64) - mean
            cov += c.T @ c
        cov /= n
        values, vectors = np.linalg.eigh(cov)  # ascending
        values, vectors = values[::-1][:dim], vectors[:, ::-1][:, :dim]
        if self.eigen_power < 0 and values[-1] <= 1e-12 * max(values[0], 1e-30):
            rank = int((values > 1e-12 * values[0]).sum())
            raise ValueError(
                f"{self.describe()}: the training descriptors span only {rank} dims (n={n}), "
                f"so {dim} cannot be whitened; set dim <= {rank} or use more training images"
            )
        signs = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(dim)])  # deterministic signs
        vectors = vectors * signs
        self.mean, self.eigenvalues = mean, values
        self.projection = vectors * np.power(np.maximum(values, 1e-300), self.eigen_power)
        self._training = None  # not needed any more
        self._dims = d_in
        return self

    def transform(self, x: np.ndarray, role: str) -> np.ndarray:
        if self.projection is None:
            raise RuntimeError(f"{self.describe()}: call fit(training descriptors) before transform")
        from isc_research.postprocess.base import ROLES, as_matrix

        if role not in ROLES:
            raise ValueError(f"{self.describe()}: role must be one of {ROLES}, got {role!r}")
        x = as_matrix(x, f"{role} descriptors")
        if x.shape[1] != self._dims:
            raise ValueError(f"{self.describe()}: {role} descriptors have {x.shape[1]} dims, fitted on {self._dims}")
        out = np.empty((len(x), self.projection.shape[1]), np.float32)
        for start in range(0, len(x), _CHUNK):
            out[start : start + _CHUNK] = (x[start : start + _CHUNK] - self.mean) @ self.projection
        return out

    def describe(self) -> str:
        kind = "pcaw" if self.eigen_power == -0.5 else ("pca" if self.eigen_power == 0 else f"pca^{self.eigen_power}")
        subset = "" if self.max_training is None else f", fit on {self.max_training}"
        return f"{kind}({'in' if self.dim is None else self.dim}{subset})"
