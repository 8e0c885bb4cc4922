"""Webhook deliveries as jobs: one signed POST of a finished job's answer, retried until it lands.

A delivery is a job of kind `webhook.deliver` whose payload carries the URL and the exact body, so
every attempt sends the same bytes. The sending job made it with the idempotency key `webhook:<job
id>`: however often that job runs (a worker killed after enqueueing), one delivery exists. Network
errors, timeouts, 408, 429 and 5xx answers are retried by the queue with its exponential backoff;
another 4xx is final (the receiver refused it). A worker killed after the POST but before recording
it sends again, with the same `x-keel-delivery-id`: receivers dedupe on it (at least once on the
wire, once in effect).

Signature: the scheme of keel.alerts.sender. Headers `x-keel-delivery-id`, `x-keel-timestamp` (unix
seconds of this attempt) and `x-keel-signature: sha256=<hex HMAC-SHA256 of "{timestamp}.{raw body}">`
keyed with `async_calls.webhook_secret`.
"""

from __future__ import annotations

import ipaddress
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from keel.errors import InvalidRequest
from keel.jobs.errors import Permanent
from keel.store.protocols import Job, JobContext
from keel.wire.webhook import sign

if TYPE_CHECKING:
    import aiohttp

KIND = "webhook.deliver"
RETRIED = frozenset({408, 425, 429})


def check_url(url: Any, allow_private: bool) -> str:
    """A webhook URL Keel may POST to: http(s) with a host; loopback and private literal addresses only
    when `async_calls.allow_private_webhooks` is on."""
    if not isinstance(url, str) or len(url) > 2048:
        raise InvalidRequest("'webhook_url' must be an http(s) URL.", "webhook_url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("'webhook_url' must be an http(s) URL with a host.", "webhook_url")
    if not allow_private and _private(parts.hostname):
        raise InvalidRequest(
            "'webhook_url' points at a loopback or private address; an operator may allow it with "
            "async_calls.allow_private_webhooks.",
            "webhook_url",
        )
    return url


def _private(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_unspecified


def headers(secret: str, delivery_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if now is None else now))
    return {
        "content-type": "application/json",
        "x-keel-delivery-id": delivery_id,
        "x-keel-timestamp": timestamp,
        "x-keel-signature": sign(secret, timestamp, body),
    }


class Deliveries:
    """The `webhook.deliver` handler: one POST per attempt, over one pooled client."""

    def __init__(self, secret: str | None, timeout_s: float) -> None:
        self._secret = secret
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, job: Job, ctx: JobContext) -> Any:
        import aiohttp

        if self._secret is None:
            raise Permanent("async_calls.webhook_secret is not set: nothing to sign the delivery with")
        url, body, delivery_id = job.payload["url"], job.payload["body"].encode(), job.payload["delivery_id"]
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout_s))
        try:
            async with self._session.post(url, data=body, headers=headers(self._secret, delivery_id, body)) as r:
                status = r.status
                await r.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise RuntimeError(f"webhook POST to {urlsplit(url).netloc} failed: {type(exc).__name__}") from exc
        if 200 <= status < 300:
            return {"status_code": status, "attempt": job.attempts, "delivered_at": time.time()}
        if status >= 500 or status in RETRIED:
            raise RuntimeError(f"webhook receiver answered {status}")
        raise Permanent(f"webhook receiver refused the delivery with {status}")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
