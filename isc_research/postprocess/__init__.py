"""Descriptor post-processing of the ISC2021 winners, one module per step, chained from config.

Every step follows `fit(training_descriptors)` then `transform(descriptors, role)` (role: query, reference or
training); see `isc_research.postprocess.base`. `Chain` applies several and names the search metric of its output.
"""

from isc_research.postprocess.base import ROLES, PostProcess
from isc_research.postprocess.chain import Chain, build_chain, build_chains, select_models
from isc_research.postprocess.negative_embedding import NegativeEmbeddingSubtraction
from isc_research.postprocess.normalize import L2Normalize
from isc_research.postprocess.pca import PCA
from isc_research.postprocess.push_away import PushAway
from isc_research.postprocess.score_norm import ScoreNormalization
from isc_research.postprocess.stretching import Stretching

__all__ = [
    "PCA",
    "ROLES",
    "Chain",
    "L2Normalize",
    "NegativeEmbeddingSubtraction",
    "PostProcess",
    "PushAway",
    "ScoreNormalization",
    "Stretching",
    "build_chain",
    "build_chains",
    "select_models",
]
