"""Descriptor post-processing of the ISC2021 winners, one module per step, chained from config.

Every step follows `fit(training_descriptors)` then `transform(descriptors, role)` (role: query, reference or
training); see `isc.postprocess.base`. `Chain` applies several and names the search metric of its output.
"""

from isc.postprocess.base import ROLES, PostProcess
from isc.postprocess.chain import Chain, build_chain, build_chains, select_models
from isc.postprocess.negative_embedding import NegativeEmbeddingSubtraction
from isc.postprocess.normalize import L2Normalize
from isc.postprocess.pca import PCA
from isc.postprocess.push_away import PushAway
from isc.postprocess.score_norm import ScoreNormalization
from isc.postprocess.stretching import Stretching

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
