"""Who may read a document, and why a hit was admitted.

A document's access list is users and groups; both empty means the whole tenant, and `users: [""]`
means closed (admin searches only: what a user purge leaves of a list naming only them). A caller is a tenant,
a user and groups (`Access`). The store applies the rule inside every candidate query
(keel.store.sql.rag_index); this module says it again in words, for the `why` of each hit, and finds a
caller's groups: from its virtual key's metadata (`groups`: a list, or a comma-separated string), or
from the `x-keel-groups` header, which is trusted only on admin-authenticated calls (a key holder could
otherwise claim any group).
"""

from __future__ import annotations

from collections.abc import Mapping

from keel.store.protocols.rag_index import Access, DocRow

MAX_GROUPS = 64


def admitted_because(doc: DocRow, access: Access) -> str:
    if access.everything:
        return "admin search of the tenant"
    if not doc.users and not doc.groups:
        return "shared with the whole tenant"
    if access.user and access.user in doc.users:
        return f"shared with user {access.user}"
    shared = sorted(set(doc.groups) & set(access.groups))
    return f"shared with group {shared[0]}" if shared else "not admitted"


def groups_from(metadata: Mapping[str, object] | None) -> tuple[str, ...]:
    """A key's groups from its metadata: `groups` as a list of strings or one comma-separated string."""
    raw = (metadata or {}).get("groups")
    if isinstance(raw, str):
        names = [g.strip() for g in raw.split(",")]
    elif isinstance(raw, (list, tuple)):
        names = [g.strip() for g in raw if isinstance(g, str)]
    else:
        return ()
    return tuple(dict.fromkeys(g for g in names if g and len(g) <= 128))[:MAX_GROUPS]
