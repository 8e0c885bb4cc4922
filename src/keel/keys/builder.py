"""The keys capability's builder: the auth slot, the key cache, and its revocation poll."""

from __future__ import annotations

from keel.gateway.capability import Context, Contribution, Worker
from keel.keys.auth import Authenticator
from keel.keys.stage import AuthStage


def build(ctx: Context) -> Contribution:
    sc = ctx.config.server
    authenticator = Authenticator(ctx.store, ttl=sc.key_cache_ttl_s, poll=sc.revocation_poll_s, stale=sc.key_stale_s)
    ctx.add(authenticator)

    revocations = Worker("revocations", authenticator.poll, authenticator.poll_s)
    return Contribution([("auth", AuthStage(authenticator))], workers=[revocations], close=[authenticator.aclose])
