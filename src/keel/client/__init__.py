"""Helpers for applications that call Keel (no server parts: importing them loads no runtime)."""
