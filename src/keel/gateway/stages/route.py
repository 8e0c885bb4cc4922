"""The route slot: alias + principal → the call's RoutePlan."""

from __future__ import annotations

from keel.errors import AuthError
from keel.gateway.call import Call, Reply
from keel.gateway.pipeline import Handler
from keel.gateway.routing import Router


class RouteStage:
    def __init__(self, router: Router) -> None:
        self._router = router

    async def __call__(self, call: Call, next: Handler) -> Reply:
        if call.principal is None:
            raise AuthError("unauthenticated call reached routing")
        if call.plan is not None:  # preset by an admin replay aimed at one provider model
            return await next(call)
        subject = call.user or call.session or call.principal.key_id  # a split's variant is sticky per subject
        plan = self._router.plan(
            call.request.model, call.request, call.principal, call.allowed, feature=call.feature, tier=call.tier,
            subject=subject,
        )  # fmt: skip
        variant = plan.explain.get("split") if plan.explain else None
        if variant is not None:
            call.trace.tags["keel.split"] = f"{call.request.model}:{variant}"
        call.plan = plan
        return await next(call)
