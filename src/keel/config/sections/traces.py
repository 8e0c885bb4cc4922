"""The traces capability's sections: `traces:` (the writer, spill and blob store), `retention:`,
`otel:` (OTLP export), `metrics:` (Prometheus) and `redaction:` (before a trace is stored or exported).

`check_blobs` and `check_otel` hold what one field's schema cannot: an s3:// store's credentials,
a preset's credentials, and values that must be sendable as HTTP headers.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from keel.config.parts import Model, Outline
from keel.errors import ConfigIssue


class S3Config(Model):
    """Where and how to reach an s3:// blob store; credentials usually ${ENV}."""

    endpoint: str | None = None  # http(s)://host:port of MinIO, Ceph, R2...; None: AWS S3 itself
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None


class TracesConfig(Model):
    queue_size: int = Field(10_000, ge=1)
    batch_size: int = Field(5000, ge=1)  # a full batch shares rollup rows: fewer upserts per record (bench/usage.py)
    flush_interval_ms: int = Field(50, ge=1)
    spill_dir: str = ".keel/spill"
    # records no store will take go to <spill_dir>/deadletter.jsonl; it and its one rotated file stay under this
    deadletter_max_bytes: int = Field(64 * 2**20, ge=65_536)
    stall_after_s: float = Field(15.0, gt=0)  # a store write running longer makes /readyz answer 503
    store_payloads: bool = True
    # response text (content; each tool call's arguments) a trace keeps; beyond it, a truncation marker
    max_response_chars: int = Field(2**20, ge=1024)
    # request + response JSON above this goes to the blob store, the row keeps its key; None: always inline
    blob_threshold_bytes: int | None = Field(65_536, ge=1)
    blobs_url: str | None = None  # file:///path or s3://bucket/prefix; default: a directory beside a SQLite db
    s3: S3Config = S3Config()

    @field_validator("blobs_url")
    @classmethod
    def _blobs(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("file://", "s3://")):
            raise ValueError("must be file:///path or s3://bucket/prefix")
        return v


def check_blobs(traces: TracesConfig, outline: Outline) -> list[ConfigIssue]:
    """An s3:// blob store needs credentials; its endpoint is an http(s) URL."""
    s3 = traces.s3
    issues: list[ConfigIssue] = []
    if traces.blobs_url is not None and traces.blobs_url.startswith("s3://"):
        for key in ("access_key_id", "secret_access_key"):
            if not getattr(s3, key) and not {"traces.s3", f"traces.s3.{key}"} & outline.rejected:
                fix = f"set traces.s3.{key}, e.g. ${{AWS_{key.upper()}}}"
                issues.append(ConfigIssue(f"traces.s3.{key}", "required by an s3:// blobs_url", fix))
    if s3.endpoint is not None and not s3.endpoint.startswith(("http://", "https://")):
        fix = "use http://host:9000 or https://..., the S3-compatible server's base URL"
        issues.append(ConfigIssue("traces.s3.endpoint", f"not an http(s) URL: {s3.endpoint!r}", fix))
    return issues


class TenantRetention(Model):
    traces_days: float | None = Field(..., gt=0)  # null: keep this tenant's traces forever


class RetentionConfig(Model):
    """Raw traces older than N days are deleted in bounded batches; rollups are kept."""

    traces_days: float | None = Field(None, gt=0)  # every tenant's default; None: keep forever
    tenants: dict[str, TenantRetention] = {}
    sweep_every_s: float = Field(3600.0, gt=0)  # the gateway's background sweep
    batch_size: int = Field(1000, ge=1, le=100_000)  # rows per DELETE statement
    pause_ms: float = Field(50.0, ge=0)  # between statements, so the trace writer gets its turn
    orphan_grace_s: float = Field(3600.0, ge=0)  # blobs without a trace row are deleted once this old


OtelPreset = Literal["langfuse", "phoenix", "mlflow"]


class OtelConfig(Model):
    """OTLP/HTTP export of every call as a GenAI span; on when `endpoint` or `preset` is set."""

    endpoint: str | None = None  # base URL; /v1/traces (or the preset's path) is added unless given
    preset: OtelPreset | None = None  # fills the URL path and the auth header shape
    headers: dict[str, str] = {}  # sent with every export; values may use ${ENV}, never logged
    public_key: str | None = None  # langfuse
    secret_key: str | None = None  # langfuse
    api_key: str | None = None  # phoenix (optional)
    experiment_id: str | None = None  # mlflow
    capture_content: bool = False  # prompts and responses as gen_ai.input/output.messages
    service_name: str = "keel"
    queue_size: int = Field(10_000, ge=1)  # spans waiting; beyond it new spans are dropped and counted
    batch_size: int = Field(512, ge=1)
    flush_interval_ms: int = Field(1000, ge=1)
    timeout_s: float = Field(10.0, gt=0)
    retries: int = Field(4, ge=0)  # on 429, 5xx and connection errors, with exponential backoff

    @property
    def enabled(self) -> bool:
        return self.endpoint is not None or self.preset is not None


# Each preset's credential fields: (key, required, where to find it).
OTEL_CREDENTIALS: dict[str, tuple[tuple[str, bool, str], ...]] = {
    "langfuse": (
        ("public_key", True, "the project's public key (pk-lf-...), e.g. ${LANGFUSE_PUBLIC_KEY}"),
        ("secret_key", True, "the project's secret key (sk-lf-...), e.g. ${LANGFUSE_SECRET_KEY}"),
    ),
    "phoenix": (("api_key", False, "the Phoenix API key, e.g. ${PHOENIX_API_KEY}"),),
    "mlflow": (("experiment_id", True, "the MLflow experiment id the traces belong to, e.g. '0'"),),
}


def check_otel(otel: OtelConfig, outline: Outline) -> list[ConfigIssue]:
    """A preset's credentials are present, and no credential is set that the preset would ignore."""
    issues: list[ConfigIssue] = []
    if otel.endpoint is not None and not otel.endpoint.startswith(("http://", "https://")):
        fix = "use http://host:4318 or https://host/..., the collector's OTLP/HTTP base URL"
        issues.append(ConfigIssue("otel.endpoint", f"not an http(s) URL: {otel.endpoint!r}", fix))
    issues += _check_otel_headers(otel)
    if "otel.preset" in outline.rejected:
        return issues  # the schema names the choices
    preset = otel.preset
    fields = OTEL_CREDENTIALS[preset] if preset is not None else ()
    for key, required, what in fields:
        if required and not getattr(otel, key) and f"otel.{key}" not in outline.rejected:
            issues.append(ConfigIssue(f"otel.{key}", f"required by preset '{preset}'", f"set otel.{key}: {what}"))
    used = {key for key, _, _ in fields}
    for key in sorted({k for creds in OTEL_CREDENTIALS.values() for k, _, _ in creds} - used):
        if getattr(otel, key) is not None:
            users = " or ".join(p for p, creds in OTEL_CREDENTIALS.items() if key in {k for k, _, _ in creds})
            fix = f"remove it, or set otel.preset: {users}"
            why = f"not used by preset '{preset}'" if preset else "only used with a preset"
            issues.append(ConfigIssue(f"otel.{key}", why, fix))
    return issues


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _check_otel_headers(otel: OtelConfig) -> list[ConfigIssue]:
    """Values sent as HTTP headers must be sendable: no line breaks, Latin-1 only. A value is never
    echoed back: it is usually a secret."""
    values: list[tuple[str, str | None, str | None]]
    values = [(f"otel.headers.{k}", k, v) for k, v in otel.headers.items()]
    values += [("otel.api_key", None, otel.api_key), ("otel.experiment_id", None, otel.experiment_id)]
    issues = []
    for path, name, value in values:
        if name is not None and not _HEADER_NAME.fullmatch(name):
            issues.append(ConfigIssue(path, "not a valid HTTP header name", "use letters, digits and - only"))
        if value is not None and not _sendable(value):
            why = "holds a line break, NUL or a non-Latin-1 character, which an HTTP header cannot carry"
            fix = "remove it (a token read from a file often ends with a newline)"
            issues.append(ConfigIssue(path, why, fix))
    return issues


def _sendable(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return not any(c in value for c in "\r\n\x00")


class MetricsConfig(Model):
    """`GET /metrics` in Prometheus text format, per process."""

    enabled: bool = True
    require_token: bool = False  # true: scrapers must send the admin token as a bearer token
    tenant_label: bool = False  # add a tenant label to per-call series (one series set per tenant)


Detector = Literal["api_keys", "secrets", "emails", "phones", "cards"]


class CustomDetectorConfig(Model):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")  # in the placeholder: [REDACTED:name]
    pattern: str

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            compiled = re.compile(f"(?:{v})")
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        if compiled.groupindex:
            raise ValueError("named groups are not allowed; use (?:...) or plain (...) groups")
        if compiled.match(""):
            raise ValueError("the pattern matches the empty string")
        return v


class RedactionPolicyConfig(Model):
    """A tenant's override: each field it sets replaces the default's."""

    detectors: list[Detector] | None = None
    custom: list[CustomDetectorConfig] | None = None


class RedactionConfig(Model):
    """What is replaced by `[REDACTED:kind]` before a trace is stored or exported."""

    detectors: list[Detector] = ["api_keys", "secrets"]
    custom: list[CustomDetectorConfig] = []
    tenants: dict[str, RedactionPolicyConfig] = {}
