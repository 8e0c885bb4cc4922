"""Eval runs (api/evals_admin.py: admin token or a virtual key) and online eval rules and scores
(api/online_evals.py: admin token)."""

from __future__ import annotations

from keel.api.openapi.spec import (
    ANY,
    BOOL,
    EITHER,
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

RUN: Schema = obj(
    ("id", "tenant", "suite", "status", "total", "done", "created_at"),
    id=STR,
    tenant=STR,
    suite=STR,
    label=null(STR),
    status=STR,
    total=INT,
    done=INT,
    created_at=TIME,
    finished_at=null(TIME),
    job_id=null(STR),
    summary=null(OBJ),
    error=null(STR),
    repeat=INT,
    dataset=ANY,
)
RULE: Schema = obj(
    ("name", "rate", "scorers"),
    name=STR,
    rate=NUM,
    scorers=arr(OBJ),
    tenant=null(STR),
    alias=null(STR),
    feature=null(STR),
    prompt_version=null(STR),
    tags={"type": "object", "additionalProperties": STR},
    delay_s=NUM,
    enabled=BOOL,
    updated_at=TIME,
)
SCORE: Schema = obj(("scorer", "count"), scorer=STR, group=null(STR), count=INT, mean=null(NUM), pass_rate=null(NUM))
SCORER: Schema = closed(
    obj(("type", "value"), type=enum("contains", "icontains", "equals", "regex"), value=STR, metric=SLUG)
)
SHORT = {"type": "string", "maxLength": 1000}  # the evals routes refuse parameters of 1024 characters or more

EVALS: tuple[Op, ...] = (
    Op(
        "POST",
        "/api/evals/runs",
        "Start an eval run of a suite (a job)",
        {201: RUN},
        body=obj(
            ("suite",),
            suite=closed(
                obj(
                    ("prompts", "providers", "tests"),
                    description=STR,
                    prompts=arr(STR, minItems=1),
                    providers=arr(SLUG, minItems=1, description="Keel aliases (or promptfoo provider ids)"),
                    tests=arr(closed(obj(vars={"type": "object", "additionalProperties": STR}))),
                    defaultTest=OBJ,
                    grader=OBJ,
                )
            ),
            tenant=SLUG,
            key_id=SLUG,
            repeat=limit(100),
            concurrency=limit(64),
            label={"type": "string", "maxLength": 200},
            name={"type": "string", "maxLength": 200},
            cache=BOOL,
        ),
        security=EITHER,
    ),
    Op(
        "GET",
        "/api/evals/runs",
        "List eval runs, newest first",
        {200: page(RUN)},
        query=(q("tenant", SHORT), q("suite", SHORT), q("label", SHORT), q("limit", INT)),
        security=EITHER,
    ),
    Op(
        "GET",
        "/api/evals/runs/{run_id}",
        "One eval run; ?results=1 adds every result and per-item stats",
        {200: {**RUN, "properties": {**RUN["properties"], "results": arr(OBJ), "items": arr(OBJ)}}},
        query=(q("results", SHORT),),
        path_params={"run_id": SHORT},
        security=EITHER,
    ),
    Op(
        "GET",
        "/api/evals/runs/{run_id}/compare",
        "Compare a finished run with a baseline run or label",
        {200: OBJ},
        query=(
            q("baseline", SHORT),
            q("max_regressions", {"type": "integer", "minimum": 0}),
            q("min_pass_rate", {"type": "number", "minimum": 0, "maximum": 1}),
            q("alpha", {"type": "number", "minimum": 0, "maximum": 1}),
        ),
        path_params={"run_id": SHORT},
        security=EITHER,
    ),
    Op("GET", "/api/evals/online-rules", "Online eval rules", {200: page(RULE)}, errors=(401, 403)),
    Op(
        "POST",
        "/api/evals/online-rules",
        "Create or replace an online eval rule (201 new, 200 replaced)",
        {201: RULE, 200: RULE},
        body=closed(
            obj(
                ("name", "rate", "scorers"),
                name={"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,100}$"},
                rate={"type": "number", "minimum": 0, "maximum": 1},
                scorers=arr(SCORER, minItems=1, maxItems=20),
                tenant=SLUG,
                alias=SLUG,
                feature=SLUG,
                prompt_version={"type": "string", "minLength": 1, "maxLength": 256},
                tags={"type": "object", "additionalProperties": SLUG, "maxProperties": 20, "propertyNames": SLUG},
                delay_s={"type": "number", "minimum": 0, "maximum": 7 * 86400},
                enabled=BOOL,
            )
        ),
    ),
    Op("GET", "/api/evals/online-rules/{name}", "One online eval rule", {200: RULE}),
    Op(
        "DELETE",
        "/api/evals/online-rules/{name}",
        "Delete an online eval rule",
        {200: obj(("name", "deleted"), name=STR, deleted=BOOL)},
    ),
    Op(
        "GET",
        "/api/evals/online-scores",
        "Online scores per scorer and one dimension over a window",
        {200: page(SCORE, since=TIME, until=TIME, by=STR)},
        query=(
            q("since", WINDOW_EDGE),
            q("until", WINDOW_EDGE),
            q("by", enum("none", "rule", "feature", "model", "alias", "prompt_version", "tenant")),
            *(q(n, SLUG) for n in ("rule", "scorer", "feature", "alias", "tenant")),
            q("limit", limit(1000)),
        ),
    ),
)

NAMED: dict[str, Schema] = {"EvalRun": RUN, "OnlineRule": RULE, "OnlineScore": SCORE}
