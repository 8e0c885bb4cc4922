"""Persistence behind narrow protocols (see `protocols`); `open.open_store` picks a backend by URL."""
