"""Pairwise verifier of the matching track ("separate", RECIPES §6): a query and a candidate reference side by
side in one image, classified copy / not a copy by a timm backbone trained with binary cross-entropy.
`isc-train-verifier` trains it (isc_research.verifier.train); `PairwiseVerifier` scores pairs for isc-match."""

from isc_research.verifier.inference import PairwiseVerifier
from isc_research.verifier.inputs import PairInput, half_width, side_by_side

__all__ = ["PairInput", "PairwiseVerifier", "half_width", "side_by_side"]
