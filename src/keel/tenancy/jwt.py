"""JWTs checked against their issuer's published keys: bearer tokens on the admin API, ID tokens at sign-in.

An `Issuer` reads the discovery document (`/.well-known/openid-configuration`) and the JWKS it names,
over async HTTP, and caches both. A token signed by a `kid` the cache lacks refetches the JWKS (the
issuer rotated its keys), at most once per `jwks_refetch_s`, so a flood of forged kids costs one fetch.
`verify` refuses before any key is looked at an algorithm outside the allow-list (never `none`, never
HS*: a public key is no shared secret), then checks the signature, `iss`, `aud`, `exp`, `nbf`, `iat`
(with a small leeway) and, for ID tokens, the `nonce`. Errors say what is wrong, never the token.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from joserfc import jws
from joserfc import jwt as jose_jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import ECKey, KeySet, RSAKey

from keel.config.sections.sso import SsoConfig, SsoProviderConfig
from keel.errors import AuthError, PermissionDenied, Unavailable
from keel.tenancy.actor import ROLES, Identity

log = logging.getLogger("keel.tenancy.sso")
MAX_TOKEN = 16_384  # bytes of a compact JWT: far past any real one, and bounds the parse
MAX_DOCUMENT = 1 << 20  # bytes of a discovery document, JWKS or token response
PublicKey = RSAKey | ECKey


class Http(Protocol):
    """The one seam to the identity provider: JSON over HTTP (`AiohttpClient`; tests use the real one)."""

    async def get_json(self, url: str, bearer: str | None = None) -> Any: ...

    async def post_form(self, url: str, form: Mapping[str, str], basic: tuple[str, str] | None = None) -> Any: ...

    async def aclose(self) -> None: ...


class IssuerDown(Unavailable):
    """The identity provider did not answer, or answered something unusable: 503, not the caller's fault."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after=5)


class NoRole(PermissionDenied):
    """A valid identity whose groups map to no role in the provider's tenant, and no default role."""


@dataclass(frozen=True, slots=True)
class Discovery:
    """The parts of an OpenID Provider's metadata Keel uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None = None
    end_session_endpoint: str | None = None

    @classmethod
    def of(cls, doc: Any, issuer: str) -> Discovery:
        if not isinstance(doc, dict):
            raise IssuerDown(f"{issuer}: the discovery document is not a JSON object")
        if doc.get("issuer") != issuer:  # OpenID Connect Discovery 1.0 §4.3: it must be exactly ours
            raise IssuerDown(f"{issuer}: the discovery document names another issuer")
        missing = [
            k for k in ("authorization_endpoint", "token_endpoint", "jwks_uri") if not isinstance(doc.get(k), str)
        ]
        if missing:
            raise IssuerDown(f"{issuer}: the discovery document lacks {', '.join(missing)}")
        optional = {k: doc.get(k) for k in ("userinfo_endpoint", "end_session_endpoint")}
        return cls(
            issuer,
            doc["authorization_endpoint"],
            doc["token_endpoint"],
            doc["jwks_uri"],
            **{k: v if isinstance(v, str) else None for k, v in optional.items()},
        )


class Issuer:
    """One issuer's discovery document and keys, cached; safe to share by every request of one event loop."""

    def __init__(
        self,
        url: str,
        http: Http,
        refetch_s: float = 30,
        ttl_s: float = 3600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url  # the `iss` its tokens must carry, exactly
        self._http = http
        self._refetch_s, self._ttl_s, self._clock = refetch_s, ttl_s, clock
        self._discovery: Discovery | None = None
        self._discovered_at = -float("inf")
        self._keys: dict[str, PublicKey] = {}
        self._fetched_at = -float("inf")
        self._lock = asyncio.Lock()  # one JWKS fetch at a time
        self._discovering = asyncio.Lock()  # one discovery fetch at a time (taken inside `_lock` too)
        self.jwks_fetches = 0  # for tests and /readyz-style reporting

    async def discovery(self) -> Discovery:
        if self._discovery is None or self._clock() - self._discovered_at > self._ttl_s:
            async with self._discovering:
                if self._discovery is None or self._clock() - self._discovered_at > self._ttl_s:
                    doc = await self._http.get_json(self.url.rstrip("/") + "/.well-known/openid-configuration")
                    self._discovery = Discovery.of(doc, self.url)
                    self._discovered_at = self._clock()
        return self._discovery

    async def key(self, kid: str | None) -> PublicKey | None:
        """The published key `kid` names (the only key when the token names none). The JWKS is refetched
        when it lacks `kid` and the last fetch is `refetch_s` old, or when it is older than `ttl_s` (then a
        failed fetch keeps serving the keys known: the issuer being down is no reason to refuse them)."""
        found = self._pick(kid)
        if found is not None and self._clock() - self._fetched_at <= self._ttl_s:
            return found
        async with self._lock:  # one fetch for every request waiting on it
            found = self._pick(kid)
            age = self._clock() - self._fetched_at
            if found is None and age >= self._refetch_s:
                await self._fetch()
            elif found is not None and age > self._ttl_s:
                try:
                    await self._fetch()
                except IssuerDown as exc:
                    log.warning("sso: keeping %s's known keys: %s", self.url, exc.message)
            return self._pick(kid)

    def _pick(self, kid: str | None) -> PublicKey | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _fetch(self) -> None:
        self._fetched_at = self._clock()  # an attempt counts: an issuer that is down is asked once per refetch_s
        discovery = await self.discovery()
        doc = await self._http.get_json(discovery.jwks_uri)
        self.jwks_fetches += 1
        try:
            keys = KeySet.import_key_set(doc)
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise IssuerDown(f"{self.url}: its JWKS does not parse ({type(exc).__name__})") from None
        usable: dict[str, PublicKey] = {}
        for k in keys.keys:
            if isinstance(k, RSAKey | ECKey) and k.get("use", "sig") == "sig":
                usable[str(k.kid or "")] = k
        self._keys = usable
        log.info("sso: %s publishes %d signing key(s)", self.url, len(usable))


@dataclass(frozen=True, slots=True)
class Policy:
    algorithms: tuple[str, ...] = ("RS256", "PS256", "ES256")
    leeway_s: float = 60


def header_of(token: str) -> dict[str, Any]:
    """The JOSE header, unverified: what picks the issuer and key. Refuses what is not a compact JWS."""
    if len(token) > MAX_TOKEN or token.count(".") != 2:
        raise AuthError("The bearer token is not a JWT.")
    try:
        return dict(jws.extract_compact(token.encode()).headers())
    except (JoseError, ValueError, UnicodeError):
        raise AuthError("The bearer token is not a JWT.") from None


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload as sent, before any check: only to pick which configured provider checks it."""
    try:
        claims = json.loads(jws.extract_compact(token.encode()).payload)
    except (JoseError, ValueError, UnicodeError):
        raise AuthError("The bearer token is not a JWT.") from None
    if not isinstance(claims, dict):
        raise AuthError("The bearer token's payload is not a JSON object.")
    return claims


async def verify(
    token: str, issuer: Issuer, audience: str, policy: Policy, nonce: str | None = None, now: float | None = None
) -> dict[str, Any]:
    """The token's claims once every check passes; AuthError (401) naming the failed check otherwise."""
    header = header_of(token)
    alg = header.get("alg")
    if alg not in policy.algorithms:
        shown = alg if isinstance(alg, str) and len(alg) <= 16 else "?"
        raise AuthError(f"The token's algorithm {shown!r} is not allowed; allowed: {', '.join(policy.algorithms)}.")
    kid = header.get("kid")
    key = await issuer.key(kid if isinstance(kid, str) else None)
    if key is None:
        raise AuthError("The token is signed by a key its issuer does not publish.")
    try:
        token_obj = jose_jwt.decode(token, key, algorithms=list(policy.algorithms))
    except BadSignatureError:
        raise AuthError("The token's signature does not verify.") from None
    except JoseError as exc:
        raise AuthError(f"The token does not verify ({exc.error}).") from None
    claims = dict(token_obj.claims)
    _check_claims(claims, issuer.url, audience, policy, nonce, now)
    return claims


def _check_claims(
    claims: dict[str, Any], issuer: str, audience: str, policy: Policy, nonce: str | None, now: float | None
) -> None:
    options: dict[str, Any] = {
        "iss": {"essential": True, "value": issuer},
        "aud": {"essential": True, "value": audience},
        "sub": {"essential": True},
        "exp": {"essential": True},
    }
    if nonce is not None:
        options["nonce"] = {"essential": True, "value": nonce}
    at = int(time.time() if now is None else now)
    registry = jose_jwt.JWTClaimsRegistry(now=at, leeway=int(policy.leeway_s), **options)
    try:
        registry.validate(claims)
    except ExpiredTokenError:
        raise AuthError("The token has expired.") from None
    except MissingClaimError as exc:
        raise AuthError(f"The token lacks a required claim ({exc.description}).") from None
    except InvalidClaimError as exc:
        raise AuthError(f"The token is refused: {str(exc.description).rstrip('.')}.") from None
    except JoseError as exc:  # nbf or iat in the future
        raise AuthError(f"The token is not valid yet ({exc.error}).") from None
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise AuthError("The token's subject is not a string.")


def identity_of(claims: Mapping[str, Any], provider: SsoProviderConfig, issuer: str) -> Identity:
    """Claims → Identity with the provider's tenant and mapped roles, strongest first; NoRole (403) when
    nothing maps and the provider has no default role."""
    value = claims.get(provider.groups_claim)
    groups: tuple[str, ...] = ()
    if isinstance(value, str):
        groups = (value,)
    elif isinstance(value, list):
        groups = tuple(g for g in value if isinstance(g, str))
    roles = {provider.roles[g] for g in groups if g in provider.roles}
    if not roles and provider.default_role is not None:
        roles = {provider.default_role}
    if not roles:
        raise NoRole(
            f"Signed in, but no role in tenant '{provider.tenant}': none of your groups is mapped; ask an admin."
        )

    def text(name: str) -> str | None:
        v = claims.get(name)
        return v[:256] if isinstance(v, str) and v else None

    return Identity(
        issuer=issuer,
        subject=str(claims["sub"]),
        tenant=provider.tenant,
        roles=tuple(sorted(roles, key=ROLES.index)),
        email=text("email"),
        name=text("name") or text("preferred_username"),
        groups=groups,
    )


class Bearers:
    """JWT bearer tokens on the admin API: which configured provider vouches for a token, and who it names."""

    def __init__(self, config: SsoConfig, issuers: Mapping[str, Issuer]) -> None:
        self._providers = config.providers
        self._issuers = issuers
        self._policy = Policy(tuple(config.algorithms), config.leeway_s)

    def candidates(self, iss: Any, aud: Any) -> Sequence[str]:
        auds = (
            {aud}
            if isinstance(aud, str)
            else {a for a in aud if isinstance(a, str)}
            if isinstance(aud, list)
            else set()
        )
        return [
            name
            for name, p in self._providers.items()
            if self._issuers[name].url == iss and (p.audience or p.client_id) in auds
        ]

    async def identify(self, token: str, now: float | None = None) -> tuple[str, Identity]:
        """(the provider that vouches for `token`, the Identity it names); AuthError (401) when refused."""
        claims = unverified_claims(token)
        names = self.candidates(claims.get("iss"), claims.get("aud"))
        if not names:
            raise AuthError("The token's issuer and audience match no configured SSO provider.")
        name = names[0]
        provider = self._providers[name]
        issuer = self._issuers[name]
        verified = await verify(token, issuer, provider.audience or provider.client_id, self._policy, now=now)
        return name, identity_of(verified, provider, issuer.url)


class AiohttpClient:
    """`Http` over one aiohttp session, opened on first use in the loop that serves (closed by the runtime)."""

    def __init__(self, timeout_s: float = 5.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, trust_env=True)
        return self._session

    async def get_json(self, url: str, bearer: str | None = None) -> Any:
        headers = {"accept": "application/json"} | ({"authorization": f"Bearer {bearer}"} if bearer else {})
        return await self._json("GET", url, headers=headers)

    async def post_form(self, url: str, form: Mapping[str, str], basic: tuple[str, str] | None = None) -> Any:
        headers = {"accept": "application/json"}
        if basic:
            headers["authorization"] = "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
        return await self._json("POST", url, data=dict(form), headers=headers)

    async def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        where = url.split("?", 1)[0]
        try:
            async with self._open().request(method, url, allow_redirects=False, **kwargs) as r:
                body = await r.content.read(MAX_DOCUMENT + 1)
                status = r.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise IssuerDown(f"The identity provider did not answer at {where} ({type(exc).__name__}).") from None
        if len(body) > MAX_DOCUMENT:
            raise IssuerDown(f"The identity provider's answer at {where} is too large.")
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if status >= 400:
            error = doc.get("error") if isinstance(doc, dict) else None
            shown = f": {error}" if isinstance(error, str) and len(error) < 64 else ""
            raise IssuerDown(f"The identity provider answered HTTP {status} at {where}{shown}.")
        if doc is None:
            raise IssuerDown(f"The identity provider's answer at {where} is not JSON.")
        return doc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
