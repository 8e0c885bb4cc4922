"""Streaming export of the audit log to a customer's SIEM: signed batches, a durable cursor, at least once.

`SiemShipper.run` is a loop worker: it reads the entries after its cursor (the last seq the receiver
accepted, kept in the store as the audit mark "siem", so a restarted or replaced gateway resumes where
delivery stopped), POSTs them in seq order, at most `batch` a request, and moves the cursor only after a
2xx. A refused or failed POST is retried with backoff (1 s doubling to `backoff_max_s`) and never
skipped, so nothing is lost; a crash between the 2xx and the cursor's write sends that batch again, so
delivery is at least once and receivers dedupe on `seq` (each entry's position in the chain, unique).
One shipper per deployment ships: every gateway process runs one, and the one holding the store's lease
"audit-siem" (keel.store.protocols.leases) is `active`, the others `standby`. The active one renews the
lease before each POST; the lease outlasts a POST (`lease_s` > `timeout_s`, a config check), so a POST
under it has ended before anyone else can take over. A holder killed outright stops renewing; after at
most `lease_s` a standby takes the lease, reads the cursor afresh and goes on from there. A holder that
stops cleanly releases the lease at once.

The request: POST, JSON body `{"source": "keel.audit", "entries": [entry, ...], "first_seq", "last_seq"}`
(entries as `GET /api/audit` shows them, with their chain fields: the receiver can verify the links).
Headers: `x-keel-event: audit.entries`, `x-keel-delivery-id: audit-<first>-<last>`, `x-keel-timestamp`
and `x-keel-signature: sha256=<hex HMAC-SHA256 of "{timestamp}.{raw body}">`, the scheme of Keel's other
webhooks (keel.wire.webhook.sign, shared with keel.alerts.sender).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from keel.audit.log import entry_json
from keel.config.sections.audit import SiemConfig
from keel.store.protocols.audit import AuditEntry, AuditStore
from keel.store.protocols.leases import Lease, LeaseStore
from keel.wire.webhook import sign

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("keel.audit")
MARK = "siem"
LEASE = "audit-siem"
EVENT = "audit.entries"


class SiemStore(AuditStore, LeaseStore, Protocol):
    """What the shipper needs of the store: the audit log and its cursor, and the lease."""


@dataclass(slots=True)
class SiemStats:
    role: str = "standby"  # active: this process holds the lease and ships; standby: another one does
    cursor: int = 0  # the last seq the receiver accepted
    head: int = 0  # the chain's last seq at the last look
    delivered: int = 0  # entries accepted by the receiver (by this process)
    batches: int = 0
    failures: int = 0  # failed POSTs (each retried)
    failing: str | None = None  # why the last attempt failed; None once one succeeds
    last_delivery_at: float | None = None

    @property
    def lag(self) -> int:
        """Entries appended and not yet accepted by the receiver."""
        return max(0, self.head - self.cursor)

    def json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "state": self.failing or "ok",
            "cursor": self.cursor,
            "lag_entries": self.lag,
            "delivered": self.delivered,
            "failures": self.failures,
            "last_delivery_at": self.last_delivery_at,
        }


class DeliveryFailed(Exception):
    pass


class SiemShipper:
    def __init__(
        self,
        store: SiemStore,
        cfg: SiemConfig,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store, self._cfg, self._sleep, self._clock = store, cfg, sleep, clock
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.stats = SiemStats()
        self._lease: Lease | None = None

    async def run(self) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self._cfg.timeout_s)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                while True:
                    self._lease = await asyncio.to_thread(
                        self._store.acquire_lease, LEASE, self.holder, self._cfg.lease_s, self._clock()
                    )
                    if self._lease is None:
                        await self._sleep(self._cfg.lease_s / 3)
                        continue
                    self.stats.role = "active"
                    log.info("audit SIEM: this process (%s) ships the audit stream", self.holder)
                    await self._ship(session)
                    self.stats.role = "standby"
                    log.warning("audit SIEM: the lease went to another process; standing by")
        finally:
            await self._release()

    async def _ship(self, session: aiohttp.ClientSession) -> None:
        """Ship while the lease is this process's; return once it is not."""
        self.stats.cursor = await asyncio.to_thread(self._load_cursor)  # another holder may have moved it
        backoff = 0.0
        idle = min(self._cfg.interval_s, self._cfg.lease_s / 3)
        while await self._renew():
            page = await asyncio.to_thread(self._next)
            if not page:
                await self._sleep(idle)
                continue
            try:
                await self._post(session, page)
            except DeliveryFailed as exc:
                self.stats.failures += 1
                self.stats.failing = str(exc)
                backoff = min(self._cfg.backoff_max_s, max(1.0, backoff * 2))
                log.warning("audit SIEM delivery of seq %d-%d failed (%s); retrying in %.1f s",
                            page[0].seq, page[-1].seq, exc, backoff)  # fmt: skip
                await self._sleep(backoff)
                continue
            backoff = 0.0
            if not await self._renew():  # the cursor moves only under the lease (a paused holder's is stale)
                return
            await asyncio.to_thread(self._advance, page)
            if len(page) < self._cfg.batch:
                await self._sleep(idle)

    async def _renew(self) -> bool:
        assert self._lease is not None
        self._lease = await asyncio.to_thread(self._store.renew_lease, self._lease, self._cfg.lease_s, self._clock())
        return self._lease is not None

    async def _release(self) -> None:
        lease, self._lease, self.stats.role = self._lease, None, "standby"
        if lease is None:
            return
        try:
            await asyncio.to_thread(self._store.release_lease, lease)
        except Exception as exc:  # the store may be closing: the lease then expires by itself
            log.warning("audit SIEM: could not release the lease (%s); it expires in %.0f s", exc, self._cfg.lease_s)

    def _load_cursor(self) -> int:
        text = self._store.audit_mark(MARK)
        return int(text) if text and text.isdigit() else 0

    def _next(self) -> list[AuditEntry]:
        self.stats.head = self._store.audit_head()[0]
        return self._store.list_audit(after_seq=self.stats.cursor, limit=self._cfg.batch)

    def _advance(self, page: list[AuditEntry]) -> None:
        last = page[-1].seq
        self._store.set_audit_mark(MARK, str(last), self._clock())
        s = self.stats
        s.cursor, s.delivered, s.batches = last, s.delivered + len(page), s.batches + 1
        s.failing, s.last_delivery_at = None, self._clock()

    async def _post(self, session: aiohttp.ClientSession, page: list[AuditEntry]) -> None:
        import aiohttp

        first, last = page[0].seq, page[-1].seq
        body = orjson.dumps(
            {"source": "keel.audit", "entries": [entry_json(e) for e in page], "first_seq": first, "last_seq": last}
        )
        timestamp = str(int(self._clock()))
        headers = {
            "content-type": "application/json",
            "x-keel-event": EVENT,
            "x-keel-delivery-id": f"audit-{first}-{last}",
            "x-keel-timestamp": timestamp,
            "x-keel-signature": sign(self._cfg.secret, timestamp, body),
        }
        try:
            async with session.post(self._cfg.url, data=body, headers=headers) as r:
                if not 200 <= r.status < 300:
                    raise DeliveryFailed(f"the receiver answered {r.status}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: the receiver did not answer") from None
