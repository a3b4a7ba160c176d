"""Matching track (RECIPES §5-7): candidates from whole-image and crop descriptors, pair verification, score
fusion, and the matching-track CSV. Entry point: `isc_research.match.pipeline.match(cfg)` (CLI `isc-match`)."""

from isc_research.match.crops import CenterCrops, GridCrops, NoCrops
from isc_research.match.fusion import combine, fuse_pairs
from isc_research.match.local import LocalFeatureVerifier
from isc_research.match.pipeline import match
from isc_research.match.verifiers import NoVerifier

__all__ = [
    "CenterCrops",
    "GridCrops",
    "LocalFeatureVerifier",
    "NoCrops",
    "NoVerifier",
    "combine",
    "fuse_pairs",
    "match",
]
