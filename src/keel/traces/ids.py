"""Trace ids: time-ordered and unique across processes."""

from __future__ import annotations

import itertools
import os
import time

_PROCESS = os.urandom(4).hex()  # unique per process, so ids from many gateways never collide
_SEQUENCE = itertools.count()


def new_trace_id() -> str:
    """Time-ordered and unique: nanoseconds, this process's random tag, a sequence number."""
    return f"{time.time_ns():x}{_PROCESS}{next(_SEQUENCE) & 0xFFFFFF:06x}"
