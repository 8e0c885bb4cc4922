"""Named agents: a tenant's saved run settings (`keel agents add`), started by name
(`POST /api/agents/runs {agent: NAME, input}`): the alias its model steps call, its tools, its step limit,
its system prompt, and the roles it acts as, which tool policies can name (a rule's `roles`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from keel.agents.tools import NAME, SpecError
from keel.store.protocols.tenancy import TenancyStore
from keel.types import Principal

RESERVED = frozenset({"tools", "secrets", "runs"})  # /api/agents/<these> are other routes


class AgentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    model: str = Field(min_length=1, max_length=256)  # the alias its model steps call
    tools: tuple[str, ...] = Field((), max_length=64)
    max_steps: int = Field(8, ge=1, le=64)
    system: str | None = Field(None, max_length=32_768)
    roles: tuple[str, ...] = Field((), max_length=16)  # what tool policies see it as (rules' `roles`)
    description: str = Field("", max_length=4096)

    @field_validator("name")
    @classmethod
    def named(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError("1 to 64 letters, digits, '_' or '-'")
        if v in RESERVED:
            raise ValueError(f"'{v}' is taken by an agents route ({', '.join(sorted(RESERVED))})")
        return v

    @field_validator("tools", "roles")
    @classmethod
    def names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [x for x in v if not NAME.match(x)]
        if bad:
            raise ValueError(f"not a name: {bad[0]!r} (1 to 64 letters, digits, '_' or '-')")
        return v


def parse_agent(data: Any) -> AgentSpec:
    if not isinstance(data, dict):
        raise SpecError("an agent is an object: name, model, tools, max_steps, system, roles", None)
    try:
        return AgentSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        raise SpecError(f"{field or 'agent'}: {err['msg']}", field) from None


def owner_roles(store: TenancyStore, principal: Principal) -> tuple[str, ...]:
    """The roles a virtual key's runs act as: those of the user it was issued for (`user`), when that names
    an enabled user of the key's own tenant; none otherwise (a free-text `user` is attribution only)."""
    if not principal.user:
        return ()
    user = store.get_user(principal.user)
    if user is None or user.tenant != principal.tenant or user.disabled_at is not None:
        return ()
    return tuple(sorted(user.roles))
