"""`server:`: where the gateway listens, how long it trusts a key, and the bounds on what comes in."""

from __future__ import annotations

from pydantic import Field, model_validator

from keel.config.parts import Model


class CorsConfig(Model):
    """Browser clients (keel.api.app): off while `origins` is empty; preflights are answered without a key."""

    origins: tuple[str, ...] = ()  # exact origins, or "*" for any (not with credentials)
    headers: tuple[str, ...] = ("authorization", "content-type", "x-api-key", "api-key", "anthropic-version")
    methods: tuple[str, ...] = ("GET", "POST", "DELETE", "OPTIONS")
    credentials: bool = False  # allow cookies / Authorization from the browser's credential store
    expose_headers: tuple[str, ...] = ("x-keel-trace-id", "x-keel-provider", "x-keel-model", "x-keel-cache")
    max_age_s: int = Field(600, ge=0, le=86400)  # how long a browser may reuse a preflight answer

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> CorsConfig:
        if self.credentials and "*" in self.origins:
            raise ValueError("credentials: true cannot be combined with origin '*'; list the origins instead")
        return self


class ServerConfig(Model):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    key_cache_ttl_s: float = Field(30.0, gt=0)
    revocation_poll_s: float = Field(0.5, gt=0, le=1.0)
    key_stale_s: float = Field(3600.0, ge=0)  # database unreachable: known keys serve from memory this long
    # Bounds on what comes in (keel.api.bounds, keel.api.connections); per process.
    max_body_bytes: int = Field(20 * 2**20, ge=1024, le=2**31)  # larger: 413
    max_json_depth: int = Field(64, ge=8, le=128)  # nesting of arrays/objects in a JSON body; deeper: 400
    max_header_bytes: int = Field(32768, ge=1024, le=2**20)  # request line + headers; larger: 431
    max_headers: int = Field(100, ge=8, le=10_000)  # more: 431
    header_timeout_s: float = Field(10.0, gt=0, le=600)  # a request's line and headers must arrive within this
    body_timeout_s: float = Field(60.0, gt=0, le=3600)  # its body, within this after the headers; else 408
    keepalive_timeout_s: float = Field(5.0, gt=0, le=3600)  # an idle keep-alive connection is closed after this
    max_connections: int = Field(1000, ge=1, le=1_000_000)  # open client connections; past it, 503 and close
    sse_ping_s: float = Field(10.0, gt=0, le=300)  # Anthropic streams: a `ping` event after this long idle
    cors: CorsConfig = CorsConfig()
