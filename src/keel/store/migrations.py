"""Numbered SQL migrations per dialect with a ledger table (`keel_migrations`).

Files live in `keel/store/<dialect>/migrations/NNNN_name.sql` and are applied in order, each in
its own transaction together with its ledger row, so a failed migration leaves nothing half-done.
The files are package data: they are read, and split into statements, once per process (a store opened
applies its migrations one transaction at a time, asking for what is pending before each).
"""

from __future__ import annotations

import functools
from importlib import resources


def pending(dialect: str, applied: set[int]) -> list[tuple[int, str, str]]:
    """(version, name, sql) for every migration file not yet in the ledger, in order."""
    return [m for m in _files(dialect) if m[0] not in applied]


@functools.cache
def _files(dialect: str) -> tuple[tuple[int, str, str], ...]:
    folder = resources.files(f"keel.store.{dialect}").joinpath("migrations")
    out = []
    seen: dict[int, str] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        version = int(entry.name.split("_", 1)[0])
        if version in seen:  # two branches both took the next number: the ledger would skip one
            raise RuntimeError(f"migrations {seen[version]} and {entry.name} share version {version}; renumber one")
        seen[version] = entry.name
        out.append((version, entry.name.removesuffix(".sql"), entry.read_text()))
    return tuple(sorted(out))


def statements(sql: str) -> list[str]:
    """Split a migration file into statements at each `;` outside a quoted string or a `--` comment.

    Comments are dropped (a `;` in one no longer splits a statement); quoted text is kept as written.
    """
    return list(_split(sql))


@functools.lru_cache(maxsize=256)
def _split(sql: str) -> tuple[str, ...]:
    out: list[str] = []
    current: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end
        elif ch in "'\"":
            end = sql.find(ch, i + 1)
            while end >= 0 and sql.startswith(ch, end + 1):  # a doubled quote is the quote itself
                end = sql.find(ch, end + 2)
            end = n - 1 if end < 0 else end
            current.append(sql[i : end + 1])
            i = end + 1
        elif ch == ";":
            out.append("".join(current))
            current = []
            i += 1
        else:
            current.append(ch)
            i += 1
    out.append("".join(current))
    return tuple(s.strip() for s in out if s.strip())
