"""What a caller asks of the cache for one call (`x-keel-cache-control`): request input, parsed at the edge."""

from __future__ import annotations

from dataclasses import dataclass, replace

from keel.errors import InvalidRequest

HEADER = "x-keel-cache-control"


@dataclass(frozen=True, slots=True)
class Directives:
    """A call's own wishes, from `x-keel-cache-control` (comma-separated, Cache-Control style).

    no-cache: do not answer from the cache (the new answer is stored); no-store: do not store this
    answer; skip: neither; max-age=N: only entries at most N seconds old; allow: cache this call
    even though its temperature is not 0.
    """

    read: bool = True
    write: bool = True
    max_age_s: float | None = None
    allow: bool = False

    @classmethod
    def parse(cls, header: str | None) -> Directives:
        if not header:
            return _DEFAULT
        d = cls()
        for raw in header.split(","):
            word, _, value = raw.strip().lower().partition("=")
            if word == "no-cache" and not value:
                d = replace(d, read=False)
            elif word == "no-store" and not value:
                d = replace(d, write=False)
            elif word == "skip" and not value:
                d = replace(d, read=False, write=False)
            elif word == "allow" and not value:
                d = replace(d, allow=True)
            elif word == "max-age" and _seconds(value) is not None:
                d = replace(d, max_age_s=_seconds(value))
            else:
                raise InvalidRequest(
                    f"Unknown {HEADER} directive {raw.strip()!r}: use no-cache, no-store, skip, allow or max-age=SECONDS.",
                    HEADER,
                )
        return d


_DEFAULT = Directives()


def _seconds(value: str) -> float | None:
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
