"""The tenancy capability's builder: offers the `Directory` (users, teams, tokens) over the runtime's store."""

from __future__ import annotations

from keel.gateway.capability import Context, Contribution
from keel.tenancy.directory import Directory


def build(ctx: Context) -> Contribution:
    ctx.add(Directory(ctx.store))
    return Contribution([])
