"""Login throttling for the dashboard: per client, a lockout that doubles with each failed login.

The first `free` failures cost nothing (a typo); each one after that locks the client out for
`base_s`, then twice that, up to `max_s`. While locked, every login attempt (right token or wrong)
is answered 429 with Retry-After, so guessing runs at most a handful of tries an hour. A success
forgets the client. State is in memory, per process, and bounded: at most `capacity` clients, the
least recently seen forgotten first. Clients are told apart by their socket's address (a proxy in
front makes them one client; Keel does not trust forwarded-for headers).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

FREE = 3  # failures allowed before the first lockout
BASE_S = 1.0  # the first lockout
MAX_S = 900.0  # the longest lockout (15 minutes)
FORGET_S = 3600.0  # a client with no failure for this long (and not locked) starts over
CAPACITY = 4096  # clients remembered at once


@dataclass(slots=True)
class _Client:
    failures: int = 0
    locked_until: float = 0.0  # monotonic
    last_failure: float = 0.0  # monotonic


@dataclass(slots=True)
class LoginStats:
    failures: int = 0  # wrong tokens
    throttled: int = 0  # attempts refused 429 while locked out


class LoginThrottle:
    def __init__(
        self,
        *,
        free: int = FREE,
        base_s: float = BASE_S,
        max_s: float = MAX_S,
        forget_s: float = FORGET_S,
        capacity: int = CAPACITY,
    ) -> None:
        self._free, self._base_s, self._max_s, self._forget_s = free, base_s, max_s, forget_s
        self._capacity = capacity
        self._clients: OrderedDict[str, _Client] = OrderedDict()
        self.stats = LoginStats()

    def __len__(self) -> int:
        return len(self._clients)

    def retry_after(self, client: str, now: float | None = None) -> float:
        """Seconds `client` must wait before trying again; 0 when it may try now."""
        now = time.monotonic() if now is None else now
        entry = self._clients.get(client)
        if entry is None:
            return 0.0
        if now >= entry.locked_until and now - entry.last_failure > self._forget_s:
            del self._clients[client]
            return 0.0
        wait = entry.locked_until - now
        if wait > 0:
            self.stats.throttled += 1
            return wait
        return 0.0

    def failed(self, client: str, now: float | None = None) -> tuple[int, float]:
        """Count a failure; (failures in a row, the lockout it starts in seconds, 0 for none)."""
        now = time.monotonic() if now is None else now
        self.stats.failures += 1
        entry = self._clients.pop(client, None) or _Client()
        self._clients[client] = entry  # most recently seen last
        while len(self._clients) > self._capacity:
            self._clients.popitem(last=False)
        entry.failures += 1
        entry.last_failure = now
        over = entry.failures - self._free
        lock = 0.0 if over <= 0 else min(self._max_s, self._base_s * 2 ** min(over - 1, 32))
        entry.locked_until = now + lock
        return entry.failures, lock

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)
