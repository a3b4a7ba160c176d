"""Local-feature verification of candidate pairs: SIFT or ORB keypoints (OpenCV), Lowe's ratio test, and
the RANSAC inlier count of a geometric model as the score — or imgFp's count of ratio-test matches (RECIPES §7).

Images are turned grey and shrunk to ``max_side`` first (imgFp: short side ≤ 300 px, §7). Keypoints of every
image are cached by content (an LRU of ``cache_size`` images), so a reference met in many pairs, or a query
with many candidates, is described once. SIFT is rotation- but not mirror-invariant: with ``mirror`` the
query is also matched flipped left-right (hflip and vflip edits, vflip = hflip + 180° rotation) and the
better of the two scores kept.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import cv2
import numpy as np
from PIL import Image

from isc_research.images import fit_long_side

__all__ = ["LocalFeatureVerifier"]

FEATURES = ("sift", "orb")
SCORES = ("inliers", "matches", "contained_inliers")
MODELS = ("homography", "affine")


class LocalFeatureVerifier:
    """``score_pairs(queries, references) -> float array``: higher = more likely a copy.

    feature: sift | orb; n_features: keypoints kept per image; ratio: Lowe's ratio-test threshold;
    score: inliers (RANSAC inliers of ``model``) | matches (ratio-test matches, imgFp §7) | contained_inliers:
    inliers × the larger of the two shares of image area their convex hull covers (a copy holds all of the
    other image — a crop of it, or it pasted on a background — while two crops of one photo share only a part;
    source silent);
    model: homography (cv2.findHomography) | affine (cv2.estimateAffinePartial2D: rotation, scale, shift);
    reprojection_error: RANSAC threshold in pixels of the resized images; min_inliers: fewer inliers → 0;
    contrast_threshold: SIFT's (OpenCV default 0.04); lower finds keypoints on flat, low-contrast images.
    """

    def __init__(
        self,
        feature: str = "sift",
        *,
        n_features: int = 500,
        max_side: int = 300,
        ratio: float = 0.8,
        score: str = "inliers",
        model: str = "homography",
        reprojection_error: float = 5.0,
        min_inliers: int = 0,
        mirror: bool = True,
        contrast_threshold: float = 0.04,
        cache_size: int = 4096,
        seed: int = 0,
    ) -> None:
        if feature not in FEATURES:
            raise ValueError(f"feature={feature!r} is unknown; choose one of {', '.join(FEATURES)}")
        if score not in SCORES:
            raise ValueError(f"score={score!r} is unknown; choose one of {', '.join(SCORES)}")
        if model not in MODELS:
            raise ValueError(f"model={model!r} is unknown; choose one of {', '.join(MODELS)}")
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        if int(max_side) < 32 or int(n_features) < 1:
            raise ValueError(f"max_side must be >= 32 and n_features >= 1, got {max_side}, {n_features}")
        self.feature, self.n_features, self.max_side, self.ratio = feature, int(n_features), int(max_side), float(ratio)
        self.score, self.model, self.reprojection_error = score, model, float(reprojection_error)
        self.min_inliers, self.mirror, self.cache_size, self.seed = (
            int(min_inliers),
            bool(mirror),
            int(cache_size),
            seed,
        )
        self.contrast_threshold = float(contrast_threshold)
        self.name = f"{feature}-{score}" + (f"-{model}" if score == "inliers" else "")
        self._detector = None
        self._cache: OrderedDict[bytes, tuple] = OrderedDict()
        self.cache_hits = self.cache_misses = 0

    # ------------------------------------------------------------------ keypoints
    def _make_detector(self):
        if self.feature == "sift":
            return cv2.SIFT_create(nfeatures=self.n_features, contrastThreshold=self.contrast_threshold)
        return cv2.ORB_create(nfeatures=self.n_features)

    def _grey(self, image: Image.Image) -> np.ndarray:
        return np.asarray(fit_long_side(image.convert("L"), self.max_side, Image.BILINEAR))

    def _describe(self, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self._detector is None:
            self._detector = self._make_detector()
        keypoints, descriptors = self._detector.detectAndCompute(grey, None)
        points = np.array([k.pt for k in keypoints], np.float32).reshape(-1, 2)
        return points, descriptors

    def features(self, grey: np.ndarray, flipped: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(points (n, 2), descriptors (n, d) or None) of a resized grey image (`_grey`), cached by content."""
        if flipped:
            grey = np.ascontiguousarray(grey[:, ::-1])
        key = hashlib.sha1(grey.tobytes()).digest() + grey.shape[0].to_bytes(4, "little") + bytes([flipped])
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            self.cache_hits += 1
            return hit
        self.cache_misses += 1
        out = self._describe(grey)
        self._cache[key] = out
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    # ------------------------------------------------------------------ matching
    def _ratio_matches(self, da: np.ndarray | None, db: np.ndarray | None) -> np.ndarray:
        """(m, 2) index pairs of a's descriptors whose nearest b descriptor passes the ratio test."""
        if da is None or db is None or len(da) == 0 or len(db) < 2:
            return np.zeros((0, 2), np.int64)
        norm = cv2.NORM_L2 if self.feature == "sift" else cv2.NORM_HAMMING
        pairs = cv2.BFMatcher(norm).knnMatch(da, db, k=2)
        good = [
            (m.queryIdx, m.trainIdx)
            for m, n in (p for p in pairs if len(p) == 2)
            if m.distance < self.ratio * n.distance
        ]
        return np.array(good, np.int64).reshape(-1, 2)

    def _inliers(self, pa: np.ndarray, pb: np.ndarray) -> np.ndarray:
        """Boolean inlier mask of the matched points under the RANSAC fit of ``model``."""
        need = 4 if self.model == "homography" else 3
        if len(pa) < need:
            return np.zeros(len(pa), bool)
        cv2.setRNGSeed(self.seed)  # RANSAC draws: the same pair always gets the same score
        if self.model == "homography":
            _, mask = cv2.findHomography(pa, pb, cv2.RANSAC, self.reprojection_error)
        else:
            _, mask = cv2.estimateAffinePartial2D(
                pa, pb, method=cv2.RANSAC, ransacReprojThreshold=self.reprojection_error
            )
        return np.zeros(len(pa), bool) if mask is None else mask.ravel().astype(bool)

    def pair_score(self, query: Image.Image, reference: Image.Image) -> float:
        """The score of one pair (the better of plain and mirrored query with ``mirror``)."""
        grey_q, grey_r = self._grey(query), self._grey(reference)  # once per image, also when mirrored
        pr, dr = self.features(grey_r)
        best = 0.0
        for flipped in (False, True) if self.mirror else (False,):
            pq, dq = self.features(grey_q, flipped)
            matches = self._ratio_matches(dq, dr)
            if self.score == "matches":
                value = float(len(matches))
            else:
                a, b = pq[matches[:, 0]], pr[matches[:, 1]]
                inliers = self._inliers(a, b)
                value = float(inliers.sum()) if inliers.sum() >= max(1, self.min_inliers) else 0.0
                if self.score == "contained_inliers" and value:
                    value *= max(_hull_share(a[inliers], grey_q.shape), _hull_share(b[inliers], grey_r.shape))
            best = max(best, value)
        return best

    def score_pairs(self, queries: list[Image.Image], references: list[Image.Image]) -> np.ndarray:
        if len(queries) != len(references):
            raise ValueError(f"score_pairs: {len(queries)} queries but {len(references)} references")
        return np.array([self.pair_score(q, r) for q, r in zip(queries, references)], np.float64)


def _hull_share(points: np.ndarray, shape: tuple[int, int]) -> float:
    """Area of the convex hull of `points` over the area of an image of `shape` (h, w)."""
    if len(points) < 3:
        return 0.0
    hull = cv2.convexHull(points.astype(np.float32).reshape(-1, 1, 2))
    return min(1.0, float(cv2.contourArea(hull)) / float(shape[0] * shape[1]))
