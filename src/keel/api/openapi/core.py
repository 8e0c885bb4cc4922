"""Tenants, keys, traces, usage, SLOs, targets, limits and retention (api/admin.py): admin token only."""

from __future__ import annotations

from keel.api.openapi.spec import (
    ANY,
    BOOL,
    INT,
    NUM,
    OBJ,
    SLUG,
    STR,
    TIME,
    WINDOW_EDGE,
    Op,
    Schema,
    arr,
    closed,
    enum,
    limit,
    null,
    obj,
    page,
    q,
)

TENANT: Schema = obj(("name", "created_at", "regions"), name=STR, created_at=TIME, regions=null(arr(STR)))
REGIONS: Schema = null(arr(SLUG, minItems=1))
KEY: Schema = obj(
    ("id", "tenant", "prefix", "created_at"),
    id=STR,
    tenant=STR,
    prefix=STR,
    created_at=TIME,
    name=null(STR),
    user=null(STR),
    models=null(arr(STR)),
    revoked_at=null(TIME),
    priority=INT,
    max_priority=null(INT),
)
TRACE: Schema = obj(
    ("id", "started_at", "status"),
    id=STR,
    started_at=TIME,
    endpoint=null(STR),
    tenant=null(STR),
    key_id=null(STR),
    user=null(STR),
    feature=null(STR),
    session=null(STR),
    tags=null(OBJ),
    alias=null(STR),
    provider=null(STR),
    model=null(STR),
    status=STR,
    error_kind=null(STR),
    error_message=null(STR),
    http_status=null(INT),
    input_tokens=null(INT),
    output_tokens=null(INT),
    cost_usd=null(NUM),
    latency_ms=null(NUM),
    ttft_ms=null(NUM),
    stream=null(BOOL),
)
FULL_TRACE: Schema = {
    **TRACE,
    "properties": {**TRACE["properties"], "request": ANY, "response": ANY, "spans": arr(OBJ)},
}
CALL: Schema = obj(
    ("trace_id", "status"),
    trace_id=null(STR),
    alias=null(STR),
    provider=null(STR),
    model=null(STR),
    status=STR,
    error=null(STR),
    content=null(STR),
    input_tokens=null(INT),
    output_tokens=null(INT),
    cost_usd=null(NUM),
)
PURGE: Schema = obj(
    ("subject", "started_at", "finished_at", "counts", "notes", "audit_seq", "digest"),
    subject=obj(("tenant", "user"), tenant=STR, user=null(STR)),
    started_at=TIME,
    finished_at=TIME,
    counts={"type": "object", "additionalProperties": INT, "description": "rows (or files) deleted per store"},
    notes=arr(STR),
    audit_seq=null(INT),
    digest=STR,
)
SWEEP: Schema = obj(("traces", "blobs"), traces=INT, blobs=INT, orphan_blobs=INT, by_tenant=OBJ)
USAGE_ROW: Schema = obj(
    ("calls",), calls=INT, errors=INT, input_tokens=INT, output_tokens=INT, cost_usd=NUM, cache_hit_rate=null(NUM)
)
WINDOW = {"since": TIME, "until": TIME}
OBJECTIVE: Schema = obj(
    ("objective", "target", "calls"),
    objective=STR,
    target=NUM,
    good=null(NUM),
    bad=null(NUM),
    calls=INT,
    budget_remaining=null(NUM),
    burn_rate={"type": "object", "additionalProperties": null(NUM)},
)
SLO: Schema = obj(("alias", "objectives"), alias=STR, window_days=NUM, p95_ms=null(NUM), objectives=arr(OBJECTIVE))
TARGET: Schema = obj(
    ("target", "alias", "provider", "model", "breaker"),
    target=STR,
    alias=STR,
    provider=STR,
    model=STR,
    region=null(STR),
    breaker=STR,
    consecutive_failures=INT,
    opened_at=null(TIME),
    queue=null(OBJ),
    state=null(STR),
)
LIMIT_KINDS = ("rpm", "tpm", "concurrency", "tokens_day", "tokens_month", "usd_day", "usd_month", "usd_total")
LIMITS: Schema = {
    "type": "object",
    "properties": {k: {"type": "integer", "minimum": 1, "maximum": 10**12} for k in LIMIT_KINDS},
    "additionalProperties": False,
    "minProperties": 1,
}
OVERRIDE: Schema = obj(
    ("scope", "subject", "limits"),
    scope=enum("tenant", "key"),
    subject=STR,
    limits={"type": "object", "additionalProperties": NUM},
    on_store_error=null(STR),
    updated_at=TIME,
)
COUNTER: Schema = obj(
    ("counter", "kind", "window", "limit", "used"),
    counter=STR,
    kind=STR,
    window=STR,
    limit=NUM,
    used=NUM,
    share=null(NUM),
)
NAME: Schema = SLUG
INT32: Schema = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
USAGE_BY = (
    "tenant",
    "all",
    "key",
    "user",
    "feature",
    "alias",
    "provider",
    "model",
    "prompt_version",
    "status",
    "session",
)

CORE: tuple[Op, ...] = (
    Op("GET", "/api/tenants", "List tenants", {200: page(TENANT)}),
    Op(
        "POST",
        "/api/tenants",
        "Create a tenant",
        {201: TENANT},
        body=obj(("name",), name=NAME, regions=REGIONS),
    ),
    Op(
        "PATCH",
        "/api/tenants/{name}",
        "Set a tenant's regions (null: any region)",
        {200: TENANT},
        body=obj(("regions",), regions=REGIONS),
    ),
    Op(
        "POST",
        "/api/tenants/{name}/purge",
        "Delete a tenant (every store, its keys and row), or one user's data: the receipt",
        {200: PURGE},
        body=obj(user=NAME, revoke_keys=BOOL, delete_tenant=BOOL) | {"additionalProperties": False},
        body_required=False,
    ),
    Op("POST", "/api/retention/sweep", "Run one retention pass now", {200: SWEEP}, errors=(401, 403)),
    Op("GET", "/api/keys", "List virtual keys", {200: page(KEY)}, query=(q("tenant"),)),
    Op(
        "POST",
        "/api/keys",
        "Issue a virtual key (the key is shown once)",
        {201: {**KEY, "properties": {**KEY["properties"], "key": STR}, "required": [*KEY["required"], "key"]}},
        body=obj(
            ("tenant",),
            tenant=NAME,
            name=null(NAME),
            user=null(NAME),
            models=null(arr(NAME)),
            priority=null(INT32),
            max_priority=null(INT32),
        )
        | {"additionalProperties": False},
    ),
    Op("POST", "/api/keys/{key_id}/revoke", "Revoke a key", {200: KEY}),
    Op(
        "GET",
        "/api/traces",
        "List traces in a time window",
        {200: page(TRACE, **WINDOW)},
        query=(
            q("since", WINDOW_EDGE),
            q("until", WINDOW_EDGE),
            q("limit", limit(1000)),
            q("tenant"),
            q("user"),
            q("feature"),
            q("alias"),
            q("status"),
        ),
    ),
    Op("GET", "/api/traces/{trace_id}", "One trace with its request, response and spans", {200: FULL_TRACE}),
    Op(
        "POST",
        "/api/traces/{trace_id}/replay",
        "Re-send a recorded call as its tenant",
        {200: obj(("original", "replay"), original=CALL, replay=CALL)},
        body=closed(
            obj(alias=SLUG, model={"type": "string", "pattern": "^[a-z]+/.+$"}, prompt_version=limit(2**31 - 1))
        )
        | {"not": {"required": ["alias", "model"]}},
        body_required=False,
        errors=(400, 401, 403, 404, 413, 429, 502, 503, 504),
    ),
    Op(
        "GET",
        "/api/usage",
        "Usage and cost from rollups",
        {200: page(USAGE_ROW, by=STR, grain=null(STR), **WINDOW)},
        query=(
            q("by", enum(*USAGE_BY)),
            q("since", WINDOW_EDGE),
            q("until", WINDOW_EDGE),
            q("grain", enum("minute", "hour", "day")),
            q("tenant"),
            q("limit", limit(10_000)),
        ),
    ),
    Op("GET", "/api/slo", "Each alias's SLO: objectives, budget left, burn rates", {200: page(SLO)}, errors=(401, 403)),
    Op("GET", "/api/targets", "Targets with breaker state and health", {200: page(TARGET)}, errors=(401, 403)),
    Op("GET", "/api/limits", "Limit overrides", {200: page(OVERRIDE)}, errors=(401, 403)),
    Op(
        "GET",
        "/api/limits/usage",
        "Every counter that applies to a subject, with its limit and usage now",
        {200: page(COUNTER)},
        query=(
            q("tenant", STR, required=True),
            q("key", STR, "a key's id: its own limits (overrides on the key, rules scoped to keys) and its team's"),
            q("user"),
            q("feature"),
            q("alias"),
            q("team", STR, "a team of the tenant (default: the key's team)"),
        ),
        errors=(400, 401, 403, 404, 503),
    ),
    Op(
        "PUT",
        "/api/limits/{scope}/{subject}",
        "Replace a tenant's or key's limit overrides",
        {200: OVERRIDE},
        body=closed(obj(("limits",), limits=LIMITS, on_store_error=null(enum("open", "closed")))),
        path_params={"scope": enum("tenant", "key")},
    ),
    Op(
        "DELETE",
        "/api/limits/{scope}/{subject}",
        "Clear a tenant's or key's overrides",
        {200: obj(("scope", "subject", "cleared"), scope=STR, subject=STR, cleared=BOOL)},
        path_params={"scope": enum("tenant", "key")},
    ),
)

NAMED: dict[str, Schema] = {
    "Tenant": TENANT,
    "Key": KEY,
    "Trace": TRACE,
    "TraceDetail": FULL_TRACE,
    "ReplayedCall": CALL,
    "PurgeReceipt": PURGE,
    "SweepReport": SWEEP,
    "UsageRow": USAGE_ROW,
    "Slo": SLO,
    "Target": TARGET,
    "LimitOverride": OVERRIDE,
    "LimitCounter": COUNTER,
}
