from isc.callbacks.acceleration import ModelAcceleration
from isc.callbacks.determinism import EpochSeeding
from isc.callbacks.drip import ArcFaceDrip
from isc.callbacks.figures import RetrievalFigures
from isc.callbacks.retrieval import RetrievalEvaluation

__all__ = ["ArcFaceDrip", "EpochSeeding", "ModelAcceleration", "RetrievalEvaluation", "RetrievalFigures"]
