"""What a JWT bearer costs on the admin API: `keel.tenancy.jwt.Bearers.identity` per token, keys cached.

    python bench/sso.py [--n 2000]

Starts keel.testing.oidc's issuer on 127.0.0.1, fetches its keys once, then checks N RS256 tokens and
about N refused ones (expired, unpublished key, alg none) in one event loop, and prints microseconds per check and the JWKS fetches it took (one: the cache serves the rest).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

from keel.config.sections.sso import SsoConfig
from keel.errors import AuthError
from keel.tenancy.sso import SignOn
from keel.testing.oidc import FakeIssuer, FakeUser


async def run(idp: FakeIssuer, n: int) -> None:
    config = SsoConfig.model_validate(
        {"providers": {"corp": {"issuer": idp.url, "client_id": "keel", "tenant": "t1", "roles": {"eng": "admin"}}}}
    )
    sign_on = SignOn.of(config)
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
    await sign_on.aclose()
    print(f"accepted: {(t1 - t0) / n * 1e6:,.0f} µs per token ({n} RS256 tokens)")
    print(f"refused:  {(t2 - t1) / len(bad) * 1e6:,.0f} µs per token (expired, unpublished key, alg none)")
    print(f"JWKS fetches: {idp.log.jwks_requests}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    with FakeIssuer({"ann": FakeUser("pw", groups=("eng",))}) as idp:
        asyncio.run(run(idp, args.n))


if __name__ == "__main__":
    main()
