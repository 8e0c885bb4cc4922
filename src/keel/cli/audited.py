"""Control-plane changes the CLI makes straight in the database (tenants, keys, limits), recorded in the
audit log as the admin API's are: the CLI has no request to audit, so each command appends its own entry.
The actor is "cli" (whoever can run it holds the database's credentials), as `keel tools`/`secrets` do."""

from __future__ import annotations

from typing import Any

from keel.store.protocols import Store

ACTOR = "cli"


def record(
    s: Store, action: str, target: str, *, tenant: str | None = None, before: Any = None, after: Any = None
) -> None:
    from keel.audit.log import AuditLog

    AuditLog(s).append(ACTOR, action, target, tenant=tenant, before=before, after=after)
