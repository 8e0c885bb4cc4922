"""The tenancy directory's storage: users, teams and personal access tokens (PATs).

A user belongs to one tenant (None: a platform operator) and holds roles there; a user signed in
through SSO is keyed on (issuer, subject), unique. A token is stored as the sha256 of its secret only;
it belongs to one user and carries scopes that narrow what that user may do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class UserRow:
    id: str
    tenant: str | None  # None: a platform operator (every tenant)
    email: str | None
    name: str | None
    roles: tuple[str, ...]
    created_at: float
    team: str | None = None
    issuer: str | None = None  # SSO: the identity provider that vouched for this user
    subject: str | None = None  # SSO: its stable id for them
    disabled_at: float | None = None


@dataclass(frozen=True, slots=True)
class TeamRow:
    tenant: str
    name: str
    created_at: float


@dataclass(frozen=True, slots=True)
class TokenRow:
    id: str
    token_hash: str  # sha256 hex of the token; the token itself is never stored
    user_id: str
    tenant: str | None
    scopes: tuple[str, ...] | None  # permissions it narrows its user to; None: all its user's
    created_at: float
    expires_at: float | None = None
    last_used_at: float | None = None
    revoked_at: float | None = None
    name: str | None = None


class TenancyStore(Protocol):
    def create_user(self, row: UserRow) -> None:
        """Raise ValueError if the id, or the (issuer, subject) pair, is taken."""
        ...

    def get_user(self, user_id: str) -> UserRow | None: ...

    def find_user_by_subject(self, issuer: str, subject: str) -> UserRow | None: ...

    def list_users(self, tenant: str | None = None) -> list[UserRow]:
        """Every user (None) or one tenant's, by id."""
        ...

    def update_user(
        self,
        user_id: str,
        *,
        roles: tuple[str, ...] | None = None,
        team: str | None = None,
        clear_team: bool = False,
        email: str | None = None,
        name: str | None = None,
        disabled_at: float | None = None,
        enable: bool = False,
    ) -> UserRow | None:
        """Change the fields given (None leaves one as it is); None if no such user."""
        ...

    def delete_user(self, user_id: str) -> bool:
        """Delete the user and their tokens; False if no such user."""
        ...

    def create_team(self, tenant: str, name: str) -> TeamRow:
        """Raise ValueError if the tenant has that team already."""
        ...

    def list_teams(self, tenant: str | None = None) -> list[TeamRow]: ...

    def delete_team(self, tenant: str, name: str) -> bool: ...

    def create_token(self, row: TokenRow) -> None: ...

    def find_token(self, token_hash: str) -> TokenRow | None: ...

    def get_token(self, token_id: str) -> TokenRow | None: ...

    def list_tokens(self, *, user_id: str | None = None, tenant: str | None = None) -> list[TokenRow]: ...

    def revoke_token(self, token_id: str, at: float) -> TokenRow | None:
        """Mark revoked (idempotent: the first time stays); None if no such token."""
        ...

    def touch_token(self, token_id: str, at: float) -> None:
        """Record a use (last_used_at)."""
        ...


__all__ = ["TeamRow", "TenancyStore", "TokenRow", "UserRow"]
