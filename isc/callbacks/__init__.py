from isc.callbacks.drip import ArcFaceDrip
from isc.callbacks.retrieval import RetrievalEvaluation

__all__ = ["ArcFaceDrip", "RetrievalEvaluation"]
