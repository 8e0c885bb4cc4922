"""Single sign-on's builder: one `Issuer` per configured provider, shared by dashboard sign-in
(`OidcProvider`) and the admin API's JWT bearers (`Bearers`), over one async HTTP client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from keel.config.sections.sso import SsoConfig
from keel.gateway.capability import Context, Contribution
from keel.tenancy.actor import Actor, Identity
from keel.tenancy.oidc import OidcProvider

if TYPE_CHECKING:  # keel.tenancy.jwt needs joserfc (the `sso` extra): imported once a provider is configured
    from keel.tenancy.jwt import Bearers, Http, Issuer


def looks_like_jwt(token: str) -> bool:
    """A compact JWS with a JSON header (`eyJ` is `{"`): a bearer for `Bearers`, not an admin token or key."""
    return token.startswith("eyJ") and token.count(".") == 2


def actor_of(identity: Identity, ip: str | None = None) -> Actor:
    """Until a directory of users is wired in: the identity as it is, named by its issuer and subject."""
    return Actor("user", f"sso:{identity.issuer}#{identity.subject}", identity.tenant, frozenset(identity.roles), ip=ip)


@dataclass
class SignOn:
    """What the edges use: sign-in per provider name, and the JWT bearer check."""

    providers: dict[str, OidcProvider]
    bearers: Bearers
    http: Http
    issuers: dict[str, Issuer] = field(default_factory=dict)

    @classmethod
    def of(cls, config: SsoConfig, http: Http | None = None) -> SignOn:
        from keel.tenancy.jwt import AiohttpClient, Bearers, Issuer, Policy

        http = http or AiohttpClient()
        policy = Policy(tuple(config.algorithms), config.leeway_s)
        shared: dict[str, Issuer] = {}  # providers (tenants) on one issuer share its keys
        issuers: dict[str, Issuer] = {}
        for name, p in config.providers.items():
            issuers[name] = shared.setdefault(
                p.issuer, Issuer(p.issuer, http, config.jwks_refetch_s, config.jwks_ttl_s)
            )
        providers = {name: OidcProvider(name, p, issuers[name], http, policy) for name, p in config.providers.items()}
        return cls(providers, Bearers(config, issuers), http, issuers)

    async def aclose(self) -> None:
        await self.http.aclose()


def build(ctx: Context) -> Contribution:
    if not ctx.config.sso.providers:
        return Contribution()
    sign_on = SignOn.of(ctx.config.sso)
    ctx.add(sign_on)
    return Contribution(close=[sign_on.aclose])
