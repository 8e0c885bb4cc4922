"""Tenants and API keys: the rows and the store the key cache and the admin API use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class TenantRow:
    name: str
    created_at: float
    regions: tuple[str, ...] | None = None  # data residency: provider regions allowed; None = any
    viewer_content: bool = False  # viewers see traces' prompts and responses (keel.tenancy.roles)


@dataclass(frozen=True, slots=True)
class KeyRow:
    id: str
    tenant: str
    key_hash: str  # sha256 hex of the key; the key itself is never stored
    prefix: str  # first characters, to recognise a key in listings
    created_at: float
    name: str | None = None
    user: str | None = None
    models: tuple[str, ...] | None = None  # aliases this key may use; None = all
    revoked_at: float | None = None
    priority: int = 0  # its calls' priority in a saturated target's wait queue (higher first)
    max_priority: int = 0  # the most an `x-keel-priority` header may ask for
    team: str | None = None  # the tenant's team it belongs to (limits per team)


class KeyStore(Protocol):
    def create_tenant(self, name: str, regions: tuple[str, ...] | None = None) -> TenantRow:
        """Raise ValueError if it exists, or if `regions` is empty (use None for any region)."""
        ...

    def list_tenants(self) -> list[TenantRow]: ...

    def get_tenant(self, name: str) -> TenantRow | None: ...

    def set_tenant_regions(self, name: str, regions: tuple[str, ...] | None) -> TenantRow | None:
        """Restrict a tenant to `regions` (None: any region); None if no such tenant.

        Raise ValueError if `regions` is empty. Marks the tenant changed for `tenants_changed_since`.
        """
        ...

    def set_tenant_viewer_content(self, name: str, allowed: bool) -> TenantRow | None:
        """Whether the tenant's viewers see traces' content; None if no such tenant."""
        ...

    def tenants_changed_since(self, since: float) -> list[tuple[str, float]]:
        """(name, updated_at) for tenants created or changed at or after `since`."""
        ...

    def create_key(self, row: KeyRow) -> None: ...

    def list_keys(self, tenant: str | None = None) -> list[KeyRow]: ...

    def find_key(self, key_hash: str) -> KeyRow | None: ...

    def revoke_key(self, key_id: str, at: float) -> KeyRow | None:
        """Mark revoked (idempotent); None if no such key."""
        ...

    def revoked_since(self, since: float) -> list[tuple[str, float]]:
        """(key_hash, revoked_at) for keys revoked at or after `since`."""
        ...
