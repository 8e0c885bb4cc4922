"""Keel's error tree. Each error knows its HTTP status and OpenAI error `type`/`code`.

    KeelError
    ├── RequestError                      the caller can fix it (4xx)
    │   ├── InvalidRequest(param)         400 invalid_request_error
    │   ├── AuthError                     401 invalid_api_key
    │   ├── PermissionDenied              403
    │   ├── NotFound                      404 (unknown route or record)
    │   ├── ModelNotFound(alias, allowed) 404 model_not_found
    │   ├── RateLimited(retry_after)      429 rate_limit_exceeded
    │   │   └── Overloaded(retry_after)   429 target_saturated (a target's backpressure gate)
    │   └── BudgetExceeded                429 insufficient_quota
    ├── UpstreamError                     a provider failed (status mirrors the kind)
    │   ├── ProviderError(kind, ...)
    │   └── AllTargetsFailed(attempts)
    ├── Unavailable(retry_after)          503: a store Keel needs cannot answer now (not the caller's fault)
    └── ConfigError(issues)               bad keel.yaml; never reaches HTTP

`ErrorKind` classifies provider failures; one retry-policy table keys on it. A saturated target is
429 (slow down, retry after the estimated wait), not 503: the gateway and provider are healthy.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorKind(StrEnum):
    rate_limited = "rate_limited"
    overloaded = "overloaded"
    server = "server"
    timeout = "timeout"
    network = "network"
    auth = "auth"
    bad_request = "bad_request"
    not_found = "not_found"
    context_length = "context_length"
    content_filter = "content_filter"
    protocol = "protocol"  # the upstream broke its own wire format


class KeelError(Exception):
    status: int = 500
    type: str = "api_error"
    code: str | None = None
    param: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def kind(self) -> str:
        return self.code or self.type

    def headers(self) -> dict[str, str]:
        return {}


class RequestError(KeelError):
    status = 400
    type = "invalid_request_error"


class InvalidRequest(RequestError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = "invalid_value" if param else None


class AuthError(RequestError):
    status = 401
    code = "invalid_api_key"


class PermissionDenied(RequestError):
    status = 403
    code = "permission_denied"


class NotFound(RequestError):
    status = 404
    code = "not_found"


class ModelNotFound(RequestError):
    status = 404
    code = "model_not_found"
    param = "model"

    def __init__(self, alias: str, allowed: list[str]) -> None:
        names = ", ".join(allowed) or "none"
        super().__init__(
            f"The model '{alias}' does not exist or you do not have access to it. Allowed models: {names}."
        )


class RateLimited(RequestError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(max(1, int(self.retry_after + 0.999)))}


class Overloaded(RateLimited):
    """A target's concurrency cap is reached and the call cannot start before its deadline."""

    code = "target_saturated"

    def __init__(self, message: str, retry_after: float, target: str = "") -> None:
        super().__init__(message, retry_after)
        self.target = target


class BudgetExceeded(RequestError):
    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"retry-after": str(max(1, int(self.retry_after + 0.999)))}


_STATUS_BY_KIND = {
    ErrorKind.rate_limited: 429,
    ErrorKind.overloaded: 503,
    ErrorKind.server: 502,
    ErrorKind.timeout: 504,
    ErrorKind.network: 502,
    ErrorKind.auth: 502,  # our provider credentials are wrong: not the caller's fault
    ErrorKind.bad_request: 400,
    ErrorKind.not_found: 404,
    ErrorKind.context_length: 400,
    ErrorKind.content_filter: 400,
    ErrorKind.protocol: 502,
}


class Unavailable(KeelError):
    """Keel cannot serve the call now through no fault of the caller or a provider: a store is down."""

    status = 503
    type = "server_error"
    code = "service_unavailable"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(max(1, int(self.retry_after + 0.999)))}


class UpstreamError(KeelError):
    type = "upstream_error"


class ProviderError(UpstreamError):
    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        provider: str = "",
        status: int | None = None,
        retry_after: float | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.error_kind = kind
        self.provider = provider
        self.upstream_status = status
        self.retry_after = retry_after
        self.param = param
        self.status = _STATUS_BY_KIND[kind]
        self.code = "context_length_exceeded" if kind is ErrorKind.context_length else kind.value
        if kind in (ErrorKind.bad_request, ErrorKind.context_length, ErrorKind.content_filter, ErrorKind.not_found):
            self.type = "invalid_request_error"

    @property
    def kind(self) -> str:
        return self.error_kind.value

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"retry-after": str(max(1, int(self.retry_after + 0.999)))}


class AllTargetsFailed(UpstreamError):
    status = 503
    code = "all_targets_failed"

    def __init__(self, attempts: list[ProviderError], retry_after: float = 1.0) -> None:
        detail = "; ".join(f"{e.provider}: {e.kind}" for e in attempts)
        super().__init__(f"Every target failed ({detail}).")
        self.attempts = attempts
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(max(1, int(self.retry_after + 0.999)))}


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    path: str  # e.g. providers.openai.base_url
    message: str
    fix: str

    def __str__(self) -> str:
        return f"  {self.path}: {self.message}\n    fix: {self.fix}"


class ConfigError(KeelError):
    def __init__(self, issues: list[ConfigIssue], source: str = "keel.yaml") -> None:
        self.issues = issues
        head = f"{source}: {len(issues)} problem{'s' if len(issues) != 1 else ''}"
        super().__init__("\n".join([head, *map(str, issues)]))
