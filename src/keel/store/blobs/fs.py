"""Blobs as files under one directory (file:///path): the default blob store, beside a SQLite db.

A key is a relative path of plain segments (letters, digits, `._-`), so no key can leave the root.
Writes go to a temporary file renamed into place: a reader never sees half a blob, and a crash
leaves at most a `.tmp-` file, which `list` skips and the orphan sweep never needs to see.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path

_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_TMP = ".tmp-"


def check_key(key: str) -> str:
    """Refuse keys that are not relative paths of plain segments (no '..', no absolute paths)."""
    if not key or not all(_SEGMENT.fullmatch(part) and part != ".." for part in key.split("/")):
        raise ValueError(f"invalid blob key {key!r}: use segments of letters, digits, '.', '_' and '-'")
    return key


class FileBlobs:
    def __init__(self, url: str) -> None:
        if not url.startswith("file://"):
            raise ValueError(f"not a file URL: {url!r} (use file:///absolute/path or file://relative/path)")
        self.url = url
        self.root = Path(url.removeprefix("file://"))

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{_TMP}{secrets.token_hex(6)}-{path.name}")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, keys: Sequence[str]) -> int:
        n = 0
        for key in keys:
            try:
                self._path(key).unlink()
                n += 1
            except FileNotFoundError:
                continue
        return n

    def list(self, prefix: str = "") -> Iterator[tuple[str, float]]:
        start = self.root / prefix.rstrip("/") if prefix else self.root
        if not start.is_dir():
            return
        for folder, _, files in os.walk(start):
            for name in files:
                if name.startswith(_TMP):
                    continue
                path = Path(folder) / name
                try:
                    mtime = path.stat().st_mtime
                except FileNotFoundError:  # deleted while listing
                    continue
                yield path.relative_to(self.root).as_posix(), mtime

    def close(self) -> None:
        return None
