"""Single sign-on's builder: one `Issuer` per configured provider, shared by dashboard sign-in
(`OidcProvider`) and the admin API's JWT bearers (`Bearers`), over one async HTTP client.

`SignOn.actor` turns what a provider vouched for into the user it is, through the `Directory`: created
at first sight when the provider has `jit: true`, else only users added beforehand (keyed on issuer and
subject); their roles follow the provider's mapping at every sign-in."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from keel.config.sections.sso import SsoConfig
from keel.errors import PermissionDenied
from keel.gateway.capability import Context, Contribution
from keel.tenancy.actor import Actor, Identity
from keel.tenancy.directory import Directory
from keel.tenancy.oidc import OidcProvider

if TYPE_CHECKING:  # keel.tenancy.jwt needs joserfc (the `sso` extra): imported once a provider is configured
    from keel.tenancy.jwt import Bearers, Http, Issuer


def looks_like_jwt(token: str) -> bool:
    """A compact JWS with a JSON header (`eyJ` is `{"`): a bearer for `Bearers`, not an admin token or key."""
    return token.startswith("eyJ") and token.count(".") == 2


def actor_of(identity: Identity, ip: str | None = None) -> Actor:
    """Without a directory (a SignOn on its own, as in bench/sso.py): the identity as it is, by issuer and subject."""
    return Actor("user", f"sso:{identity.issuer}#{identity.subject}", identity.tenant, frozenset(identity.roles), ip=ip)


@dataclass
class SignOn:
    """What the edges use: sign-in per provider name, and the JWT bearer check."""

    providers: dict[str, OidcProvider]
    bearers: Bearers
    http: Http
    issuers: dict[str, Issuer] = field(default_factory=dict)
    directory: Directory | None = None  # the runtime's; None only for a SignOn used on its own

    async def actor(self, provider: str, identity: Identity, ip: str | None = None) -> Actor:
        """The user `identity` is, signed in through `provider` (a name in `providers`)."""
        if self.directory is None:
            return actor_of(identity, ip)
        if not self.providers[provider].config.jit:
            found = await asyncio.to_thread(
                self.directory.store.find_user_by_subject, identity.issuer, identity.subject
            )
            if found is None:
                raise PermissionDenied(
                    f"No Keel user is linked to this {self.providers[provider].display_name} account"
                    f" in tenant '{identity.tenant}': ask an admin to add you."
                )
        return replace(await self.directory.sign_in(identity), ip=ip)

    async def bearer(self, token: str, ip: str | None = None) -> Actor:
        """A JWT bearer → its user; AuthError (401) when the token is refused."""
        provider, identity = await self.bearers.identify(token)
        return await self.actor(provider, identity, ip)

    @classmethod
    def of(cls, config: SsoConfig, http: Http | None = None, directory: Directory | None = None) -> SignOn:
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
        return cls(providers, Bearers(config, issuers), http, issuers, directory)

    async def aclose(self) -> None:
        await self.http.aclose()


def build(ctx: Context) -> Contribution:
    if not ctx.config.sso.providers:
        return Contribution()
    sign_on = SignOn.of(ctx.config.sso, directory=ctx.find(Directory))
    ctx.add(sign_on)
    return Contribution(close=[sign_on.aclose])
