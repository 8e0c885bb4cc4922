"""The virtual keys page: list (by tenant, active or revoked), create (the key shown once), revoke after a
confirm step. The same capability functions as the admin API (`issue_key`, the store's `revoke_key`),
and each change is an entry in the audit log naming the signed-in actor.

A key is shown exactly once: in the answer to the POST that created it (no-store, never in a URL or a
redirect); listings show its prefix only. An actor bound to a tenant sees and changes that tenant's keys
only; a developer (an actor with a team) only its team's, when keys carry a team.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from keel.audit.log import AuditLog
from keel.dashboard.forms import csrf_field, read_form
from keel.dashboard.markup import Safe, View, h, join, when
from keel.keys.auth import issue_key, key_view
from keel.store.protocols import KeyRow, KeyStore
from keel.store.protocols.tenancy import TenancyStore
from keel.tenancy.actor import Actor
from keel.tenancy.roles import key_owner_refusal

MAX_NAME = 256  # as the admin API: what every store can index
STATES = ("active", "revoked", "all")


class KeyPageStore(KeyStore, TenancyStore, Protocol):
    """What the keys page reads and writes (users: whom a key may be issued for)."""


def _team(row: KeyRow) -> str | None:
    return getattr(row, "team", None)  # keys carry a team once tenancy gives them one


def visible(actor: Actor, row: KeyRow) -> bool:
    """May `actor` see (and, with keys.write, revoke) this key?"""
    if actor.tenant is not None and row.tenant != actor.tenant:
        return False
    return actor.team is None or _team(row) in (None, actor.team)


def _storable(value: str) -> bool:
    return bool(value) and len(value) <= MAX_NAME and "\x00" not in value


class KeyPages:
    def __init__(self, store: KeyPageStore, audit: AuditLog | None) -> None:
        self._store = store
        self._audit = audit

    async def list(self, request: Request, actor: Actor, can_write: bool) -> View:
        q = request.query_params
        state = q.get("state") or "active"
        tenant = actor.tenant or (q.get("tenant") or "").strip() or None
        if state not in STATES:
            return View("Keys", _error(f"'state' must be one of: {', '.join(STATES)}."), 400)
        rows = await asyncio.to_thread(self._store.list_keys, tenant)
        shown = [r for r in rows if visible(actor, r) and _in_state(r, state)]
        tenants = (
            [actor.tenant] if actor.tenant else [t.name for t in await asyncio.to_thread(self._store.list_tenants)]
        )
        form = _create_form(request, tenants, tenant) if can_write else Safe("")
        notice = h('<p class="notice" id="notice">Key {} revoked.</p>', q["revoked"]) if q.get("revoked") else ""
        body = h(
            "<h1>Keys</h1>{}{}{}{}",
            Safe(notice),
            _filters(actor, tenant, state),
            _table(shown, can_write),
            form,
        )
        return View("Keys", body)

    async def create(self, request: Request, actor: Actor) -> View:
        form = await read_form(request)
        if not form.trusted:
            return View(
                "Refused", _error("This form expired or did not come from this dashboard: reload the page."), 403
            )
        tenant = actor.tenant or form.text("tenant")
        name, user = form.text("name") or None, form.text("user") or None
        models = tuple(m.strip() for m in form.text("models").split(",") if m.strip()) or None
        bad = [f for f, v in (("tenant", tenant), ("name", name), ("user", user)) if v is not None and not _storable(v)]
        bad += ["models"] if models and not all(_storable(m) for m in models) else []
        if bad:
            message = f"'{bad[0]}' must be 1 to {MAX_NAME} characters without NUL."
            return View("Keys", _error(message), 400)
        refused = await asyncio.to_thread(key_owner_refusal, self._store, actor, tenant, user) if tenant else None
        if refused is not None:
            return View("Refused", _error(refused), 403)
        try:
            issued = await asyncio.to_thread(issue_key, self._store, tenant, name=name, user=user, models=models)
        except ValueError as exc:
            return View("Keys", _error(str(exc)), 400)
        await self._record(request, actor, "keys.write POST /ui/keys", issued.row, after=key_view(issued.row))
        return View("Key created", _created(issued.key, issued.row), 201)

    async def confirm(self, request: Request, actor: Actor) -> View:
        row = await self._find(actor, request.path_params["key_id"])
        if row is None:
            return _missing(request.path_params["key_id"])
        if row.revoked_at is not None:
            return View(
                "Keys", h('<h1>Key {}</h1><p id="notice">Already revoked at {}.</p>', row.id, when(row.revoked_at))
            )
        body = h(
            '<h1>Revoke key {}?</h1><table id="key">{}</table><p>Calls with this key are refused within a second, '
            "in every process. This cannot be undone.</p>"
            '<form method="post" action="/ui/keys/{}/revoke">{}<button type="submit" id="confirm-revoke">Revoke</button>'
            ' <a href="/ui/keys">Cancel</a></form>',
            row.id,
            _facts(row),
            quote(row.id, safe=""),
            csrf_field(request),
        )
        return View(f"Revoke {row.id}", body)

    async def revoke(self, request: Request, actor: Actor) -> View | Response:
        form = await read_form(request)
        if not form.trusted:
            return View(
                "Refused", _error("This form expired or did not come from this dashboard: reload the page."), 403
            )
        row = await self._find(actor, request.path_params["key_id"])
        if row is None:
            return _missing(request.path_params["key_id"])
        done = await asyncio.to_thread(self._store.revoke_key, row.id, time.time())
        if done is None:
            return _missing(row.id)
        if row.revoked_at is None:
            await self._record(request, actor, f"keys.write POST /ui/keys/{row.id}/revoke", done, after=key_view(done))
        return RedirectResponse(f"/ui/keys?revoked={quote(row.id, safe='')}&tenant={quote(row.tenant, safe='')}", 303)

    async def _find(self, actor: Actor, key_id: str) -> KeyRow | None:
        rows = await asyncio.to_thread(self._store.list_keys, actor.tenant)
        return next((r for r in rows if r.id == key_id and visible(actor, r)), None)

    async def _record(self, request: Request, actor: Actor, action: str, row: KeyRow, **detail: Any) -> None:
        if self._audit is not None:
            ip = request.client.host if request.client else None
            await self._audit.record(actor.id, action, row.id, tenant=row.tenant, source_ip=ip, **detail)


def _in_state(row: KeyRow, state: str) -> bool:
    return state == "all" or (row.revoked_at is None) == (state == "active")


def _error(message: str) -> Safe:
    return h('<h1>Keys</h1><p class="error" id="error">{}</p><p><a href="/ui/keys">Back to keys</a></p>', message)


def _missing(key_id: str) -> View:
    return View("Not found", h('<h1>No key {}</h1><p><a href="/ui/keys">Back to keys</a></p>', key_id), 404)


def _filters(actor: Actor, tenant: str | None, state: str) -> Safe:
    pick = h('<label>tenant<input name="tenant" value="{}"></label>', tenant or "") if actor.tenant is None else ""
    states = join(h('<option value="{}"{}>{}</option>', s, Safe(" selected" if s == state else ""), s) for s in STATES)
    return h(
        '<form class="filters" method="get" action="/ui/keys">{}<label>state<select name="state">{}</select></label>'
        '<button type="submit">Filter</button></form>',
        Safe(pick),
        states,
    )


def _table(rows: list[KeyRow], can_write: bool) -> Safe:
    head = Safe(
        "<tr><th>Key</th><th>Name</th><th>Tenant</th><th>Team</th><th>User</th><th>Aliases</th>"
        "<th>Created (UTC)</th><th>Revoked (UTC)</th><th></th></tr>"
    )
    body = join(_row(r, can_write) for r in rows) or Safe('<tr><td colspan="9" class="muted">No keys</td></tr>')
    return h('<table id="keys">{}{}</table>', head, body)


def _row(r: KeyRow, can_write: bool) -> Safe:
    action = (
        h('<a href="/ui/keys/{}/revoke" class="revoke">Revoke…</a>', quote(r.id, safe=""))
        if can_write and r.revoked_at is None
        else Safe("")
    )
    return h(
        '<tr data-key="{}"><td><code>{}…</code> <span class="muted">{}</span></td><td>{}</td><td>{}</td><td>{}</td>'
        "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        r.id,
        r.prefix,
        r.id,
        r.name or "–",
        r.tenant,
        _team(r) or "–",
        r.user or "–",
        ", ".join(r.models) if r.models else "all",
        when(r.created_at),
        when(r.revoked_at) if r.revoked_at else "–",
        action,
    )


def _create_form(request: Request, tenants: list[str], chosen: str | None) -> Safe:
    options = join(
        h('<option value="{}"{}>{}</option>', t, Safe(" selected" if t == chosen else ""), t) for t in tenants
    )
    return h(
        '<h2>Create a key</h2><form class="filters" method="post" action="/ui/keys" id="create-key">{}'
        '<label>tenant<select name="tenant">{}</select></label><label>name<input name="name" maxlength="256"></label>'
        '<label>user<input name="user" maxlength="256"></label>'
        '<label>aliases (comma-separated; empty: all)<input name="models"></label>'
        '<button type="submit">Create</button></form>',
        csrf_field(request),
        options,
    )


def _facts(r: KeyRow) -> Safe:
    pairs = [
        ("id", r.id),
        ("prefix", r.prefix + "…"),
        ("name", r.name or "–"),
        ("tenant", r.tenant),
        ("team", _team(r) or "–"),
        ("user", r.user or "–"),
        ("aliases", ", ".join(r.models) if r.models else "all"),
        ("created (UTC)", when(r.created_at)),
    ]
    return join(h("<tr><th>{}</th><td>{}</td></tr>", k, v) for k, v in pairs)


def _created(key: str, row: KeyRow) -> Safe:
    return h(
        "<h1>Key created</h1><p><b>Copy the key now: it is shown only this once.</b> Keel keeps only its hash.</p>"
        '<pre id="new-key">{}</pre><table id="key">{}</table><p><a href="/ui/keys?tenant={}">Back to keys</a></p>',
        key,
        _facts(row),
        quote(row.tenant, safe=""),
    )
