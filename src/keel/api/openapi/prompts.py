"""The prompt registry and feedback (api/prompts_admin.py): the admin token or a tenant's virtual key."""

from __future__ import annotations

from keel.api.openapi.spec import (
    ANY,
    BOOL,
    COMMON_ERRORS,
    EITHER,
    INT,
    NUM,
    OBJ,
    SLUG,
    STR,
    TENANT_Q,
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

SHARE: Schema = obj(("version", "weight"), version={"type": "integer", "minimum": 1}, weight=NUM)
VERSION: Schema = obj(
    ("tenant", "name", "version", "hash", "messages"),
    tenant=STR,
    name=STR,
    version=INT,
    hash=STR,
    messages=arr(OBJ),
    variables=null(OBJ),
    alias=null(STR),
    params=null(OBJ),
    tools=null(arr(OBJ)),
    response_format=null(OBJ),
    message=null(STR),
    author=null(STR),
    created_at=TIME,
)
LABEL: Schema = obj(
    ("tenant", "name", "label", "version"),
    tenant=STR,
    name=STR,
    label=STR,
    version=INT,
    protected=BOOL,
    rollout=arr(SHARE),
    updated_at=TIME,
    updated_by=null(STR),
)
ROLLOUT: Schema = obj(
    ("tenant", "name", "label", "stable", "version", "weight", "state"),
    tenant=STR,
    name=STR,
    label=STR,
    stable=INT,
    version=INT,
    weight=NUM,
    state=STR,
    guards=arr(STR),
    steps=arr(NUM),
    started_at=TIME,
    reason=null(STR),
)
MOVE: Schema = obj(
    ("label", "at", "version"), label=STR, at=TIME, version=INT, rollout=arr(SHARE), actor=null(STR), reason=null(STR)
)
TEAM = null(STR)  # the team a prompt belongs to; null: the whole tenant (decision 0064)
SUMMARY: Schema = obj(
    ("tenant", "name", "labels", "latest"),
    tenant=STR,
    name=STR,
    team=TEAM,
    labels={"type": "object", "additionalProperties": INT},
    latest=INT,
    updated_at=TIME,
)
PUSH: Schema = obj(
    ("name", "messages"),
    tenant=SLUG,
    name=SLUG,
    messages=arr(closed(obj(("role", "content"), role=enum("system", "user", "assistant"), content=STR)), minItems=1),
    variables=OBJ,
    alias=STR,
    params=OBJ,
    tools=arr(
        obj(("type", "function"), type={"const": "function"}, function=obj(("name",), name=SLUG, parameters=OBJ))
    ),
    response_format=OBJ,
    message=STR,
    label=SLUG,
    team=TEAM,  # a developer: their own team's (the default); others: set or clear it
)
PUSHED: Schema = {
    **VERSION,
    "properties": {**VERSION["properties"], "created": BOOL, "label": LABEL, "team": TEAM},
    "required": [*VERSION["required"], "created", "team"],
}
POSITIVE: Schema = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
PROMPT_ERRORS = (*COMMON_ERRORS, 409)

PROMPTS: tuple[Op, ...] = (
    Op(
        "GET",
        "/api/prompts",
        "List prompts with their latest version and labels",
        {200: page(SUMMARY)},
        query=(TENANT_Q,),
        security=EITHER,
    ),
    Op(
        "POST",
        "/api/prompts",
        "Push a prompt version (unchanged content: the same version, 200)",
        {201: PUSHED, 200: PUSHED},
        body=PUSH,
        security=EITHER,
        errors=PROMPT_ERRORS,
    ),
    Op(
        "GET",
        "/api/prompts/{name}",
        "One version: by number, by label, or the latest (ETag: its content hash)",
        {200: {**VERSION, "properties": {**VERSION["properties"], "labels": arr(STR)}}},
        query=(TENANT_Q, q("version", POSITIVE), q("label", SLUG)),
        security=EITHER,
    ),
    Op(
        "GET",
        "/api/prompts/{name}/versions",
        "Every version of a prompt",
        {200: page(VERSION)},
        query=(TENANT_Q,),
        security=EITHER,
    ),
    Op(
        "PUT",
        "/api/prompts/{name}/labels/{label}",
        "Point a label at a version, optionally splitting it across others",
        {200: LABEL},
        body=obj(("version",), tenant=SLUG, version=POSITIVE, protected=BOOL, rollout=null(arr(SHARE))),
        security=EITHER,
        errors=PROMPT_ERRORS,
    ),
    Op(
        "POST",
        "/api/prompts/{name}/labels/{label}/rollback",
        "Move a label back to its previous version",
        {200: LABEL},
        query=(TENANT_Q,),
        security=EITHER,
        errors=PROMPT_ERRORS,
    ),
    Op(
        "POST",
        "/api/prompts/{name}/rollouts",
        "Start a guarded rollout of a version behind a label",
        {201: obj(("label", "rollout"), label=LABEL, rollout=ROLLOUT)},
        body=obj(
            ("label", "to", "weight"),
            tenant=SLUG,
            label=SLUG,
            to=POSITIVE,
            weight={"type": "number", "exclusiveMinimum": 0, "maximum": 100},
            guards=arr(
                {"type": "string", "pattern": "^(error_rate|p95_ms|cost_per_call|feedback)(<|>|<=|>=)[0-9]{1,4}$"}
            ),
            steps=arr({"type": "number", "exclusiveMinimum": 0, "maximum": 100}, description="ascending weights"),
            every=WINDOW_EDGE,
            window=WINDOW_EDGE,
            min_calls=limit(1_000_000),
        ),
        security=EITHER,
        errors=PROMPT_ERRORS,
    ),
    Op(
        "GET",
        "/api/prompts/{name}/rollouts",
        "A prompt's rollouts",
        {200: page(ROLLOUT)},
        query=(TENANT_Q,),
        security=EITHER,
    ),
    Op(
        "GET",
        "/api/prompts/{name}/history",
        "A prompt's label moves, newest first",
        {200: page(MOVE)},
        query=(TENANT_Q, q("label", SLUG), q("limit", limit(10_000))),
        security=EITHER,
    ),
    Op(
        "POST",
        "/api/feedback",
        "Score one call by its x-keel-trace-id",
        {201: obj(("trace_id", "score"), trace_id=STR, score=NUM, prompt_version=ANY, model=null(STR), user=null(STR))},
        body=closed(
            obj(
                ("trace_id", "score"),
                trace_id=SLUG,
                score={"type": "number", "minimum": 0, "maximum": 1},
                comment=STR,
                user=SLUG,
            )
        ),
        security=EITHER,
    ),
    Op(
        "GET",
        "/api/feedback",
        "Count and mean score per prompt version or model",
        {200: page(OBJ)},
        query=(TENANT_Q, q("by", enum("prompt_version", "model")), q("since", WINDOW_EDGE), q("until", WINDOW_EDGE)),
        security=EITHER,
    ),
)

NAMED: dict[str, Schema] = {
    "PromptVersion": VERSION,
    "PromptLabel": LABEL,
    "PromptRollout": ROLLOUT,
    "LabelMove": MOVE,
    "PromptSummary": SUMMARY,
    "PromptPush": PUSH,
    "PromptPushed": PUSHED,
}
