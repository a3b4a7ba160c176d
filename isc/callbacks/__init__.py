from isc.callbacks.retrieval import RetrievalEvaluation

__all__ = ["RetrievalEvaluation"]
