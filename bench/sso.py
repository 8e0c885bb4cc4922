"""What a JWT bearer costs on the admin API: `keel.tenancy.jwt.Bearers.identity` per token, keys cached.

    python bench/sso.py [--n 2000]

Starts keel.testing.oidc's issuer on 127.0.0.1, fetches its keys once, then checks N RS256 tokens and
about N refused ones (expired, unpublished key, alg none) in one event loop, and prints microseconds per check and the JWKS fetches it took (one: the cache serves the rest);
then the same tokens resolved to their directory user on SQLite, as the admin guard does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time

from keel.config.sections.sso import SsoConfig
from keel.errors import AuthError
from keel.store.open import open_store
from keel.tenancy.directory import Directory
from keel.tenancy.sso import SignOn
from keel.testing.oidc import FakeIssuer, FakeUser


async def run(idp: FakeIssuer, n: int, tmp: str) -> None:
    config = SsoConfig.model_validate(
        {"providers": {"corp": {"issuer": idp.url, "client_id": "keel", "tenant": "t1", "roles": {"eng": "admin"}}}}
    )
    sign_on = SignOn.of(config)
    store = open_store(f"sqlite:///{tmp}/keel.db")
    store.create_tenant("t1")
    users = SignOn.of(config, directory=Directory(store))
    good = [idp.mint("ann", extra={"jti": str(i)}) for i in range(n)]
    bad = [
        idp.mint("ann", expires_in=-600),
        idp.mint("ann", unpublished_key=True),
        idp.mint("ann", alg_none=True),
    ] * (n // 3)
    await sign_on.bearers.identify(good[0])  # discovery and JWKS, once
    t0 = time.perf_counter()
    for token in good:
        await sign_on.bearers.identify(token)
    t1 = time.perf_counter()
    for token in bad:
        with contextlib.suppress(AuthError):
            await sign_on.bearers.identify(token)
    t2 = time.perf_counter()
    await users.bearer(good[0])  # the user created (jit)
    t3 = time.perf_counter()
    for token in good:
        await users.bearer(token)
    t4 = time.perf_counter()
    await sign_on.aclose()
    await users.aclose()
    print(f"accepted: {(t1 - t0) / n * 1e6:,.0f} µs per token ({n} RS256 tokens)")
    print(f"accepted and resolved to its directory user (SQLite): {(t4 - t3) / n * 1e6:,.0f} µs per token")
    print(f"refused:  {(t2 - t1) / len(bad) * 1e6:,.0f} µs per token (expired, unpublished key, alg none)")
    print(f"JWKS fetches: {idp.log.jwks_requests} (one per SignOn: the cache serves every other token)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    with FakeIssuer({"ann": FakeUser("pw", groups=("eng",))}) as idp, tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(idp, args.n, tmp))


if __name__ == "__main__":
    main()
