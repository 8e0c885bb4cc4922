"""`Directory`: users, teams and personal access tokens, the logic the admin API, the CLI, the dashboard
and SSO share.

A personal access token (`keel_pat_…`) is shown once and stored as its sha256 only. Resolving one to an
`Actor` refuses a revoked or expired token and a disabled or removed user with a 401 that says which.
Resolutions are cached for `cache_s` (bounded to `cache_size` tokens), so a busy admin client costs no
query per call; a revocation or a user change in this process drops the cache at once, in other
processes it takes effect within `cache_s`. `sign_in` is SSO's just-in-time provisioning, keyed on the
identity provider's (issuer, subject).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from keel.errors import AuthError, InvalidRequest, NotFound
from keel.store.protocols import KeyStore
from keel.store.protocols.tenancy import TeamRow, TenancyStore, TokenRow, UserRow
from keel.tenancy.actor import OPERATOR, ROLES, Actor, Identity
from keel.tenancy.roles import unknown_scopes

PAT_PREFIX = "keel_pat_"
MAX_NAME = 256
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$")
TOUCH_EVERY_S = 60.0  # last_used_at is written at most this often per token


class DirectoryStore(TenancyStore, KeyStore, Protocol):
    """What the directory reads and writes: its own tables, and tenants (to check they exist)."""


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str  # shown once, never stored
    row: TokenRow


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _text(value: str | None, field: str) -> str | None:
    if value is not None and (not value.strip() or len(value) > MAX_NAME or "\x00" in value):
        raise InvalidRequest(f"'{field}' must be 1 to {MAX_NAME} characters, not blank, without NUL.", field)
    return value


def check_roles(roles: tuple[str, ...]) -> tuple[str, ...]:
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles:
        raise InvalidRequest(f"Roles are one or more of {', '.join(ROLES)}; not {', '.join(bad) or 'none'}.", "roles")
    return tuple(dict.fromkeys(roles))


def user_view(u: UserRow) -> dict[str, Any]:
    return {**asdict(u), "roles": list(u.roles), "disabled": u.disabled_at is not None}


def token_view(t: TokenRow) -> dict[str, Any]:
    """A token as shown: never the secret, not even its hash."""
    out = asdict(t)
    del out["token_hash"]
    out["scopes"] = None if t.scopes is None else list(t.scopes)
    return out


def actor_of(user: UserRow, scopes: tuple[str, ...] | None = None, ip: str | None = None) -> Actor:
    roles = frozenset(user.roles)
    return Actor(
        kind="operator" if user.tenant is None and OPERATOR in roles else "user",
        id=f"user:{user.id}",
        tenant=user.tenant,
        roles=roles,
        team=user.team,
        scopes=None if scopes is None else frozenset(scopes),
        ip=ip,
    )


class Directory:
    def __init__(
        self,
        store: DirectoryStore,
        *,
        cache_s: float = 5.0,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._cache_s, self._cache_size, self._clock = cache_s, cache_size, clock
        self._cache: OrderedDict[str, tuple[float, Actor | AuthError]] = OrderedDict()
        self._touched: dict[str, float] = {}

    # ---- users -----------------------------------------------------------------------------------

    async def add_user(
        self,
        tenant: str | None,
        roles: tuple[str, ...],
        *,
        user_id: str | None = None,
        email: str | None = None,
        name: str | None = None,
        team: str | None = None,
        issuer: str | None = None,
        subject: str | None = None,
    ) -> UserRow:
        """A user of `tenant` with `roles`; tenant None and roles ("operator",) make a platform operator."""
        if user_id is not None and not _ID.match(user_id):
            raise InvalidRequest("'id' is 1 to 128 letters, digits and _.@+- (starting with a letter or digit).", "id")
        for value, field in (
            (email, "email"),
            (name, "name"),
            (team, "team"),
            (issuer, "issuer"),
            (subject, "subject"),
        ):
            _text(value, field)
        if (issuer is None) != (subject is None):
            missing = "subject" if subject is None else "issuer"
            raise InvalidRequest(f"An SSO identity is an issuer and a subject together: name '{missing}' too.", missing)
        if tenant is None:
            if tuple(roles) != (OPERATOR,) or team is not None:
                raise InvalidRequest("A user without a tenant is an operator: roles ['operator'], no team.", "roles")
        else:
            roles = check_roles(roles)
            await self._tenant(tenant)
            if team is not None:
                await self._team(tenant, team)
        row = UserRow(user_id or "usr_" + secrets.token_hex(6), tenant, email, name, tuple(roles), self._clock(),
                      team, issuer, subject)  # fmt: skip
        try:
            await asyncio.to_thread(self.store.create_user, row)
        except ValueError as exc:
            taken = None
            if issuer is not None and subject is not None:
                taken = await asyncio.to_thread(self.store.find_user_by_subject, issuer, subject)
            raise InvalidRequest(str(exc), "id" if taken is None else "subject") from None
        return row

    async def list_users(self, tenant: str | None = None) -> list[UserRow]:
        return await asyncio.to_thread(self.store.list_users, tenant)

    async def user(self, user_id: str, tenant: str | None = None) -> UserRow:
        """The user `user_id`; NotFound if none, or if `tenant` is given and it is another tenant's."""
        row = await asyncio.to_thread(self.store.get_user, user_id)
        if row is None or (tenant is not None and row.tenant != tenant):
            raise NotFound(f"No user '{user_id}'.")
        return row

    async def update_user(
        self,
        user_id: str,
        *,
        tenant: str | None = None,
        roles: tuple[str, ...] | None = None,
        team: str | None = None,
        clear_team: bool = False,
        email: str | None = None,
        name: str | None = None,
        disabled: bool | None = None,
    ) -> UserRow:
        before = await self.user(user_id, tenant)
        if roles is not None:
            roles = (OPERATOR,) if before.tenant is None else check_roles(roles)
        if team is not None:
            if before.tenant is None:
                raise InvalidRequest("An operator has no team.", "team")
            await self._team(before.tenant, _text(team, "team") or "")
        for value, field in ((email, "email"), (name, "name")):
            _text(value, field)
        now = self._clock()
        row = await asyncio.to_thread(
            lambda: self.store.update_user(
                user_id, roles=roles, team=team, clear_team=clear_team, email=email, name=name,
                disabled_at=now if disabled else None, enable=disabled is False,
            )
        )  # fmt: skip
        if row is None:
            raise NotFound(f"No user '{user_id}'.")
        self.forget()
        return row

    async def remove_user(self, user_id: str, tenant: str | None = None) -> UserRow:
        row = await self.user(user_id, tenant)
        await asyncio.to_thread(self.store.delete_user, user_id)
        self.forget()
        return row

    # ---- teams -----------------------------------------------------------------------------------

    async def add_team(self, tenant: str, name: str) -> TeamRow:
        await self._tenant(tenant)
        if not _ID.match(name):
            raise InvalidRequest("A team name is 1 to 128 letters, digits and _.@+-.", "name")
        try:
            return await asyncio.to_thread(self.store.create_team, tenant, name)
        except ValueError as exc:
            raise InvalidRequest(str(exc), "name") from None

    async def list_teams(self, tenant: str | None = None) -> list[TeamRow]:
        return await asyncio.to_thread(self.store.list_teams, tenant)

    async def remove_team(self, tenant: str, name: str) -> None:
        if not await asyncio.to_thread(self.store.delete_team, tenant, name):
            raise NotFound(f"No team '{name}' in tenant '{tenant}'.")

    # ---- tokens ----------------------------------------------------------------------------------

    async def issue_token(
        self,
        user_id: str,
        *,
        scopes: tuple[str, ...] | None = None,
        expires_at: float | None = None,
        name: str | None = None,
    ) -> IssuedToken:
        """A new token for `user_id`: the secret is in the answer only. Scopes narrow the user's
        permissions (names from keel.tenancy.roles.PERMISSIONS); None: all of them."""
        user = await self.user(user_id)
        if user.disabled_at is not None:
            raise InvalidRequest(f"User '{user_id}' is disabled.", "user")
        if scopes is not None and (bad := unknown_scopes(scopes)):
            raise InvalidRequest(f"Unknown scope(s): {', '.join(bad)}.", "scopes")
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise InvalidRequest("'expires_at' must be in the future.", "expires_at")
        _text(name, "name")
        token = PAT_PREFIX + secrets.token_urlsafe(32)
        row = TokenRow("pat_" + secrets.token_hex(8), hash_token(token), user.id, user.tenant,
                       None if scopes is None else tuple(dict.fromkeys(scopes)), now, expires_at, name=name)  # fmt: skip
        await asyncio.to_thread(self.store.create_token, row)
        return IssuedToken(token, row)

    async def list_tokens(self, *, user_id: str | None = None, tenant: str | None = None) -> list[TokenRow]:
        return await asyncio.to_thread(lambda: self.store.list_tokens(user_id=user_id, tenant=tenant))

    async def token(self, token_id: str) -> TokenRow:
        row = await asyncio.to_thread(self.store.get_token, token_id)
        if row is None:
            raise NotFound(f"No token '{token_id}'.")
        return row

    async def revoke_token(self, token_id: str) -> TokenRow:
        row = await asyncio.to_thread(self.store.revoke_token, token_id, self._clock())
        if row is None:
            raise NotFound(f"No token '{token_id}'.")
        self.forget()
        return row

    async def resolve(self, token: str, ip: str | None = None) -> Actor:
        """The actor a `keel_pat_…` token stands for; AuthError (401) naming why it is refused."""
        digest, now = hash_token(token), self._clock()
        hit = self._cache.get(digest)
        if hit is None or now - hit[0] > self._cache_s:
            hit = (now, await asyncio.to_thread(self._lookup, digest, now))
            self._remember(digest, hit)
        found = hit[1]
        if isinstance(found, AuthError):
            raise found
        return found if ip is None else replace(found, ip=ip)

    def _lookup(self, digest: str, now: float) -> Actor | AuthError:
        row = self.store.find_token(digest)
        if row is None:
            return AuthError("Invalid personal access token.")
        if row.revoked_at is not None:
            return AuthError(f"Personal access token {row.id} was revoked.")
        if row.expires_at is not None and row.expires_at <= now:
            return AuthError(f"Personal access token {row.id} has expired.")
        user = self.store.get_user(row.user_id)
        if user is None:
            return AuthError(f"Personal access token {row.id} belongs to a removed user.")
        if user.disabled_at is not None:
            return AuthError(f"User '{user.id}' is disabled.")
        if now - self._touched.get(row.id, 0.0) >= TOUCH_EVERY_S:
            self._touched[row.id] = now
            self.store.touch_token(row.id, now)
        return actor_of(user, row.scopes)

    def _remember(self, digest: str, hit: tuple[float, Actor | AuthError]) -> None:
        self._cache[digest] = hit
        self._cache.move_to_end(digest)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        if len(self._touched) > self._cache_size:
            self._touched.clear()

    def forget(self) -> None:
        """Drop cached resolutions (after a revocation or a user change in this process)."""
        self._cache.clear()

    # ---- SSO -------------------------------------------------------------------------------------

    async def sign_in(self, identity: Identity) -> Actor:
        """The actor for an SSO login or JWT: the user keyed on (issuer, subject), created on first sight,
        its roles, email and name updated from the identity when they changed. No roles mapped: refused."""
        roles = tuple(r for r in identity.roles if r in ROLES)
        if not roles:
            raise AuthError(f"The identity provider granted {identity.subject} no role in '{identity.tenant}'.")
        user = await asyncio.to_thread(self.store.find_user_by_subject, identity.issuer, identity.subject)
        if user is None:
            try:
                user = await self.add_user(identity.tenant, roles, email=identity.email, name=identity.name,
                                           issuer=identity.issuer, subject=identity.subject)  # fmt: skip
            except InvalidRequest:  # created meanwhile by another login
                user = await asyncio.to_thread(self.store.find_user_by_subject, identity.issuer, identity.subject)
                if user is None:
                    raise
        elif user.tenant != identity.tenant:
            raise AuthError(f"This identity belongs to another tenant than '{identity.tenant}'.")
        if user.disabled_at is not None:
            raise AuthError(f"User '{user.id}' is disabled.")
        if set(user.roles) != set(roles) or (identity.email, identity.name) != (user.email, user.name):
            user = await self.update_user(user.id, roles=roles, email=identity.email, name=identity.name)
        return actor_of(user)

    # ---- checks ----------------------------------------------------------------------------------

    async def _tenant(self, tenant: str) -> None:
        if await asyncio.to_thread(self.store.get_tenant, tenant) is None:
            raise NotFound(f"No tenant '{tenant}'.")

    async def _team(self, tenant: str, team: str) -> None:
        if team not in {t.name for t in await asyncio.to_thread(self.store.list_teams, tenant)}:
            raise NotFound(f"No team '{team}' in tenant '{tenant}': add it first (keel teams add).")
