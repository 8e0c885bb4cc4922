"""The tenancy directory's store (users, teams, personal access tokens) on SQLite and PostgreSQL, and the
`Directory` over it: tokens resolve to the right actor and are refused (401, saying why) once revoked,
expired, or their user disabled or removed; SSO sign-in creates the user once and follows role changes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from keel.errors import AuthError, InvalidRequest, NotFound
from keel.store.open import open_store
from keel.store.protocols import Store, TokenRow, UserRow
from keel.tenancy.actor import Identity
from keel.tenancy.directory import PAT_PREFIX, Directory, hash_token


@pytest.fixture
def store(storage_url: str) -> Iterator[Store]:
    opened = open_store(storage_url)
    try:
        opened.create_tenant("acme")
        opened.create_tenant("globex")
        yield opened
    finally:
        opened.close()


def test_users_round_trip_and_change(store: Store) -> None:
    row = UserRow("alice", "acme", "a@acme.test", "Alice", ("developer",), 100.0, team=None)
    store.create_user(row)
    assert store.get_user("alice") == row
    with pytest.raises(ValueError):
        store.create_user(row)
    store.create_user(UserRow("root", None, None, None, ("operator",), 101.0))
    store.create_user(UserRow("bob", "globex", None, None, ("viewer",), 102.0))
    assert [u.id for u in store.list_users()] == ["alice", "bob", "root"]
    assert [u.id for u in store.list_users("acme")] == ["alice"]
    store.create_team("acme", "platform")
    changed = store.update_user("alice", roles=("admin", "viewer"), team="platform", disabled_at=200.0)
    assert changed is not None
    assert (changed.roles, changed.team, changed.disabled_at, changed.email) == (
        ("admin", "viewer"),
        "platform",
        200.0,
        "a@acme.test",
    )
    again = store.update_user("alice", enable=True, clear_team=True)
    assert again is not None and (again.team, again.disabled_at) == (None, None)
    assert store.update_user("nobody", roles=("viewer",)) is None
    assert store.delete_user("bob") and not store.delete_user("bob")
    assert store.get_user("bob") is None


def test_an_sso_subject_is_unique_and_found(store: Store) -> None:
    store.create_user(UserRow("u1", "acme", None, None, ("viewer",), 1.0, issuer="https://idp", subject="s-1"))
    store.create_user(UserRow("u2", "acme", None, None, ("viewer",), 1.0))  # NULL subjects do not collide
    store.create_user(UserRow("u3", "acme", None, None, ("viewer",), 1.0))
    with pytest.raises(ValueError):
        store.create_user(UserRow("u4", "acme", None, None, ("viewer",), 1.0, issuer="https://idp", subject="s-1"))
    found = store.find_user_by_subject("https://idp", "s-1")
    assert found is not None and found.id == "u1"
    assert store.find_user_by_subject("https://other", "s-1") is None


def test_teams_per_tenant(store: Store) -> None:
    store.create_team("acme", "ml")
    store.create_team("globex", "ml")
    with pytest.raises(ValueError):
        store.create_team("acme", "ml")
    assert [(t.tenant, t.name) for t in store.list_teams()] == [("acme", "ml"), ("globex", "ml")]
    assert [t.name for t in store.list_teams("acme")] == ["ml"]
    assert store.delete_team("acme", "ml") and not store.delete_team("acme", "ml")


def test_tokens_keep_only_their_hash(store: Store) -> None:
    store.create_user(UserRow("alice", "acme", None, None, ("developer",), 1.0))
    row = TokenRow("pat_1", hash_token("keel_pat_secret"), "alice", "acme", ("prompts.read",), 10.0, 99.0, name="ci")
    store.create_token(row)
    assert store.find_token(hash_token("keel_pat_secret")) == row
    assert store.get_token("pat_1") == row
    store.create_token(TokenRow("pat_2", hash_token("other"), "alice", "acme", None, 11.0))
    assert [t.id for t in store.list_tokens(user_id="alice")] == ["pat_1", "pat_2"]
    assert [t.id for t in store.list_tokens(tenant="globex")] == []
    store.touch_token("pat_1", 50.0)
    revoked = store.revoke_token("pat_1", 60.0)
    assert revoked is not None and (revoked.revoked_at, revoked.last_used_at) == (60.0, 50.0)
    again = store.revoke_token("pat_1", 70.0)
    assert again is not None and again.revoked_at == 60.0  # the first revocation stays
    assert store.revoke_token("nope", 1.0) is None
    assert store.delete_user("alice")
    assert store.list_tokens(user_id="alice") == []  # a removed user's tokens go with them


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_directory_tokens_resolve_and_are_refused_with_the_reason(store: Store) -> None:
    clock = Clock()
    d = Directory(store, cache_s=0.0, clock=clock)

    async def go() -> None:
        await d.add_team("acme", "ml")
        user = await d.add_user("acme", ("developer",), user_id="alice", team="ml", email="a@acme.test")
        issued = await d.issue_token(user.id, scopes=("prompts.read",), expires_at=clock.now + 60)
        assert issued.token.startswith(PAT_PREFIX) and issued.token not in repr(issued.row)
        stored = store.get_token(issued.row.id)
        assert stored is not None and stored.token_hash == hash_token(issued.token)
        actor = await d.resolve(issued.token, "10.0.0.1")
        assert (actor.kind, actor.id, actor.tenant, actor.team, actor.ip) == (
            "user",
            "user:alice",
            "acme",
            "ml",
            "10.0.0.1",
        )
        assert actor.can("prompts.read") and not actor.can("prompts.write")  # scopes narrow the role
        assert not actor.can("tenants.manage")  # and never widen it
        touched = store.get_token(issued.row.id)
        assert touched is not None and touched.last_used_at == clock.now

        with pytest.raises(AuthError, match="Invalid"):
            await d.resolve(PAT_PREFIX + "not-a-token")
        clock.now += 61
        with pytest.raises(AuthError, match="expired"):
            await d.resolve(issued.token)
        other = await d.issue_token("alice")
        await d.update_user("alice", disabled=True)
        with pytest.raises(AuthError, match="disabled"):
            await d.resolve(other.token)
        await d.update_user("alice", disabled=False)
        assert (await d.resolve(other.token)).can("prompts.write")
        await d.revoke_token(other.row.id)
        with pytest.raises(AuthError, match="revoked"):
            await d.resolve(other.token)
        third = await d.issue_token("alice")
        await d.remove_user("alice")
        with pytest.raises(AuthError):
            await d.resolve(third.token)

    asyncio.run(go())


def test_directory_refuses_what_cannot_be(store: Store) -> None:
    d = Directory(store)

    async def go() -> None:
        with pytest.raises(InvalidRequest, match="Roles"):
            await d.add_user("acme", ("superuser",))
        with pytest.raises(NotFound, match="tenant"):
            await d.add_user("nowhere", ("viewer",))
        with pytest.raises(NotFound, match="team"):
            await d.add_user("acme", ("viewer",), team="ghosts")
        with pytest.raises(InvalidRequest, match="operator"):
            await d.add_user(None, ("owner",))
        op = await d.add_user(None, ("operator",), user_id="root")
        assert op.tenant is None
        with pytest.raises(InvalidRequest, match="scope"):
            await d.issue_token("root", scopes=("everything",))
        actor = await d.resolve((await d.issue_token("root")).token)
        assert actor.kind == "operator" and actor.can("tenants.manage")
        with pytest.raises(NotFound):
            await d.user("root", tenant="acme")  # another tenant's admin cannot see it

    asyncio.run(go())


def test_sign_in_creates_once_and_follows_the_mapping(store: Store) -> None:
    d = Directory(store)
    idp = Identity("https://idp.test", "sub-1", "acme", ("developer",), email="d@acme.test", name="Dev")

    async def go() -> None:
        first = await d.sign_in(idp)
        again = await d.sign_in(idp)
        assert first == again and first.roles == frozenset({"developer"})
        users = store.list_users("acme")
        assert len(users) == 1 and (users[0].issuer, users[0].subject, users[0].email) == (
            "https://idp.test",
            "sub-1",
            "d@acme.test",
        )
        promoted = await d.sign_in(Identity("https://idp.test", "sub-1", "acme", ("admin",), email="d@acme.test"))
        assert promoted.roles == frozenset({"admin"}) and len(store.list_users("acme")) == 1
        with pytest.raises(AuthError, match="no role"):
            await d.sign_in(Identity("https://idp.test", "sub-2", "acme", ()))
        with pytest.raises(AuthError, match="another tenant"):
            await d.sign_in(Identity("https://idp.test", "sub-1", "globex", ("viewer",)))
        await d.update_user(users[0].id, disabled=True)
        with pytest.raises(AuthError, match="disabled"):
            await d.sign_in(idp)

    asyncio.run(go())
