"""LISTEN on the jobs channel: news that another process queued jobs (`JobWakeups`).

One connection of its own (LISTEN holds it), used by one thread. A lost connection is opened again on
the next wait; meanwhile waits time out, and workers fall back to polling at that interval.
"""

from __future__ import annotations

import time

import psycopg

from keel.store.postgres import JOBS_CHANNEL, link_options


class PgWakeups:
    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._url, autocommit=True, **link_options(self._url))  # type: ignore[arg-type]
            self._conn.execute(f"LISTEN {JOBS_CHANNEL}")
        return self._conn

    def wait(self, timeout_s: float) -> bool:
        started = time.monotonic()
        try:
            conn = self._connect()
            heard = False
            for _ in conn.notifies(timeout=timeout_s, stop_after=1):
                heard = True
            if heard:  # take what else is pending, without waiting: one wake-up for a burst
                for _ in conn.notifies(timeout=0):
                    pass
            return heard
        except psycopg.Error:
            self.close()
            time.sleep(max(0.0, timeout_s - (time.monotonic() - started)))
            return False

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
