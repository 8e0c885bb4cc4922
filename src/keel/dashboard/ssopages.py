"""Dashboard sign-in through OpenID Connect: `/ui/sso/{provider}/login` sends the browser to the issuer,
`/ui/sso/{provider}/callback` brings it back signed in; logout ends the session at the issuer too.

The flow's state, nonce and PKCE verifier ride in a signed cookie scoped to /ui/sso (SameSite=Lax,
since the issuer's redirect back is a cross-site navigation), so any replica can finish a sign-in.
The callback answers with a page that moves on by itself rather than a redirect: a redirect chain
that began at the issuer is cross-site, and the browser would not send the new SameSite=Strict
session cookie with it. Errors name what failed, never a code or token.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from keel.dashboard.markup import Safe, h, join, layout
from keel.dashboard.session import COOKIE, FLOW_COOKIE, Sessions, SignedIn, landing
from keel.errors import KeelError
from keel.tenancy.actor import ROLES
from keel.tenancy.oidc import FLOW_TTL_S, OidcProvider
from keel.tenancy.sso import SignOn

log = logging.getLogger("keel.dashboard")


class SsoPages:
    def __init__(
        self,
        sessions: Sessions,
        sign_on: SignOn | None,
        headers: dict[str, str],
        public_url: str | None = None,
    ) -> None:
        self._sessions = sessions
        self._sign_on = sign_on
        self._providers = sign_on.providers if sign_on else {}
        self._headers = headers
        self._public_url = public_url.rstrip("/") if public_url else None

    def routes(self) -> list[Route]:
        return [
            Route("/ui/sso/{provider}/login", self.login, methods=["GET"]),
            Route("/ui/sso/{provider}/callback", self.callback, methods=["GET"]),
        ]

    def links(self, next_path: str) -> Safe:
        """A "Sign in with <provider>" link per configured provider, for the login page."""
        return join(
            h(
                '<p><a class="sso" data-provider="{}" href="/ui/sso/{}/login?next={}">Sign in with {}</a></p>',
                name,
                name,
                quote(next_path, safe=""),
                p.display_name,
            )
            for name, p in self._providers.items()
        )

    def _base(self, request: Request) -> str:
        return self._public_url or str(request.base_url).rstrip("/")

    def _page(self, title: str, body: Safe, status: int = 200, refresh: str | None = None) -> Response:
        page = str(layout(title, body, signed_in=False))
        if refresh:  # same-origin paths or the issuer's logout URL, escaped
            page = page.replace("<head>", str(h('<head><meta http-equiv="refresh" content="0;url={}">', refresh)), 1)
        return HTMLResponse(page, status, dict(self._headers))

    def _failed(self, message: str, status: int) -> Response:
        body = h('<div class="login"><h1>Sign-in failed</h1><p class="error" id="login-error">{}</p>'
                 '<p><a href="/ui/login">Back to the login page</a></p></div>', message)  # fmt: skip
        return self._page("Sign-in failed", body, status)

    def _provider(self, request: Request) -> OidcProvider | None:
        return self._providers.get(request.path_params["provider"])

    async def login(self, request: Request) -> Response:
        provider = self._provider(request)
        if provider is None or not self._sessions.enabled:
            return self._failed("No such sign-in provider.", 404)
        redirect_uri = f"{self._base(request)}/ui/sso/{provider.name}/callback"
        try:
            url, flow = await provider.begin(redirect_uri, landing(request.query_params.get("next")))
        except KeelError as err:
            log.warning("sso %s: sign-in could not start: %s", provider.name, err.message)
            return self._failed(f"{provider.display_name} cannot be reached now: {err.message}", err.status)
        response = RedirectResponse(url, 303, self._headers)
        response.set_cookie(
            FLOW_COOKIE,
            self._sessions.issue_flow(flow),
            max_age=FLOW_TTL_S,
            path="/ui/sso",
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        return response

    async def callback(self, request: Request) -> Response:
        provider = self._provider(request)
        if provider is None or not self._sessions.enabled:
            return self._failed("No such sign-in provider.", 404)
        flow = self._sessions.read_flow(request.cookies.get(FLOW_COOKIE))
        if flow is None:
            return self._failed("This sign-in has no state in this browser (expired or started elsewhere).", 400)
        redirect_uri = f"{self._base(request)}/ui/sso/{provider.name}/callback"
        params = {k: v for k, v in request.query_params.items() if k in ("code", "state", "error")}
        try:
            identity = await provider.finish(flow, params, redirect_uri)
            assert self._sign_on is not None  # a provider was found
            actor = await self._sign_on.actor(provider.name, identity, request.client.host if request.client else None)
        except KeelError as err:
            log.warning("sso %s: sign-in refused: %s", provider.name, err.message)
            return self._failed(err.message, err.status)
        roles = tuple(
            sorted(actor.roles, key=lambda r: ROLES.index(r) if r in ROLES else len(ROLES))
        )  # strongest first
        who = SignedIn(actor.id, actor.tenant, roles, 0, identity.name or identity.email, provider.name)
        log.info("sso %s: %s signed in to tenant %s as %s", provider.name, actor.id, actor.tenant, ", ".join(who.roles))
        response = self._page("Signed in", h('<p><a href="{}">Continue</a></p>', flow.next), refresh=flow.next)
        response.set_cookie(
            COOKIE,
            self._sessions.issue(who),
            max_age=int(self._sessions.ttl_s),
            path="/ui",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        response.delete_cookie(FLOW_COOKIE, path="/ui/sso", httponly=True, samesite="lax")
        return response

    async def logout(self, request: Request, who: SignedIn | None) -> Response | None:
        """The page ending an SSO session at its issuer too, or None (then /ui/login)."""
        provider = self._providers.get(who.provider) if who and who.provider else None
        if provider is None:
            return None
        url = await provider.logout_url(f"{self._base(request)}/ui/login")
        if url is None:
            return None
        body = h(
            '<p>Signed out of Keel. <a id="issuer-logout" href="{}">Sign out of {}</a></p>', url, provider.display_name
        )
        return self._page("Signed out", body, refresh=url)
