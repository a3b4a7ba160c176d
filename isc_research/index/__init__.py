"""Search your own images: a persistent faiss index of descriptors (`store`), the embedding of image files that
reports unreadable ones (`embed`), and the copy threshold calibrated on validation data (`calibrate`).
Used by `isc-search` (isc_research/cli/search.py)."""
