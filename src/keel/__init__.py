"""Keel: an open, self-hosted AI gateway and platform layer."""

__version__ = "0.1.0"
