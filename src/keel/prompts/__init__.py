"""Prompts as versioned data, served by the gateway: a registry of immutable versions and movable
labels (content.py, registry.py), the `{{ name }}` renderer (render.py), the in-memory book the request
path reads (book.py) and the `prompt` slot's stage (stage.py)."""
