"""Matching track (RECIPES §5-7): candidates from whole-image and crop descriptors, pair verification, score
fusion, and the matching-track CSV. Entry point: `isc.match.pipeline.match(cfg)` (CLI `isc-match`)."""

from isc.match.crops import CenterCrops, GridCrops, NoCrops
from isc.match.fusion import combine, fuse_pairs
from isc.match.local import LocalFeatureVerifier
from isc.match.pipeline import match
from isc.match.verifiers import NoVerifier

__all__ = ["CenterCrops", "GridCrops", "LocalFeatureVerifier", "NoCrops", "NoVerifier", "combine", "fuse_pairs", "match"]
