"""isc: a research framework for image copy detection (ISC2021 / DISC21)."""

__version__ = "0.1.0"
