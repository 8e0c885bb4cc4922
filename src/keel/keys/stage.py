"""The auth slot: a bearer key becomes the call's Principal."""

from __future__ import annotations

from keel.gateway.call import Call, Reply
from keel.gateway.pipeline import Handler
from keel.keys.auth import Authenticator


class AuthStage:
    """Bearer key → Principal. A Call that arrives with a principal was resolved already: by the HTTP
    edge, before it read the body (one key lookup per call), or by Keel itself (an admin replay runs as
    the original call's tenant)."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._auth = authenticator

    async def __call__(self, call: Call, next: Handler) -> Reply:
        if call.principal is None:
            call.principal, call.allowed = await self._auth.resolve(call.api_key)
        principal = call.principal
        asked = call.asked_priority
        call.priority = principal.priority if asked is None else min(asked, principal.max_priority)
        call.user = call.user or principal.user
        return await next(call)
