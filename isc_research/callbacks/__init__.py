from isc_research.callbacks.acceleration import ModelAcceleration
from isc_research.callbacks.determinism import EpochSeeding
from isc_research.callbacks.drip import ArcFaceDrip
from isc_research.callbacks.figures import RetrievalFigures
from isc_research.callbacks.retrieval import RetrievalEvaluation

__all__ = ["ArcFaceDrip", "EpochSeeding", "ModelAcceleration", "RetrievalEvaluation", "RetrievalFigures"]
