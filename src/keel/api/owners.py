"""Which team owns a prompt or a RAG collection, on the admin API's management routes (decision 0064).

A team-bound developer (keel.tenancy.roles.team_bound) makes things of their own team, and changes and
lists only those; a thing of another team, or tenant-wide (team None), is refused with 403 naming the
owner: names are unique per tenant, so hiding one would only turn its refusal into a name clash. Owners,
admins and operators reach every team's and may set or clear `team`. Calls that *use* a prompt or a
collection (a chat call, a search) do not come here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from keel.errors import InvalidRequest, NotFound, PermissionDenied
from keel.store.protocols.tenancy import TenancyStore
from keel.tenancy.actor import Actor
from keel.tenancy.roles import reaches_team, team_bound


@dataclass(frozen=True, slots=True)
class Owner:
    """The team a body asks for: what a new thing gets, and (`given`) whether to give an existing one."""

    team: str | None
    given: bool


async def asked_owner(store: TenancyStore, actor: Actor, tenant: str, body: dict[str, Any]) -> Owner:
    """The body's `team`, checked: a team-bound developer's own team whether named or not (another one:
    403); anyone else's as named, a team of the tenant (None, or absent: tenant-wide)."""
    given, team = "team" in body, body.get("team")
    if team is not None and not isinstance(team, str):
        raise InvalidRequest("'team' must be a team's name, or null for the whole tenant.", "team")
    if team_bound(actor):
        if actor.team is None:
            raise PermissionDenied(f"{actor.id} is in no team: an owner or admin adds them to one ('team').")
        if given and team != actor.team:
            raise PermissionDenied(f"{actor.id} makes its own team's only: 'team': {actor.team!r}.")
        return Owner(actor.team, False)
    if given and actor.kind == "key":
        raise PermissionDenied("A virtual key does not give things to teams: 'team' is set by a person.")
    if team is not None and team not in {t.name for t in await asyncio.to_thread(store.list_teams, tenant)}:
        raise NotFound(f"No team '{team}' in tenant '{tenant}': add it first (keel teams add).")
    return Owner(team, given)


def check_reach(actor: Actor, what: str, team: str | None) -> None:
    """PermissionDenied unless `actor` may change `what`, which belongs to `team` (None: tenant-wide)."""
    if not reaches_team(actor, team):
        owner = f"team '{team}'" if team is not None else "the whole tenant ('team': null)"
        raise PermissionDenied(f"{what} belongs to {owner}: {actor.id} changes team {actor.team!r}'s only.")
