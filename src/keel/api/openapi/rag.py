"""RAG collections, documents (api/rag_admin.py) and search (api/rag_search.py): the admin token (any
tenant, named in the query or body) or a tenant's virtual key (its own)."""

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

CHUNKING: Schema = obj(max_tokens=INT, overlap=INT, strategy=STR)
CHUNKING_IN: Schema = closed(
    obj(
        max_tokens={"type": "integer", "minimum": 16, "maximum": 8192},
        overlap={"type": "integer", "minimum": 0, "maximum": 4096, "description": "at most max_tokens / 2"},
        strategy=enum("structure", "sentences"),
    )
)
RERANK: Schema = closed(
    obj(
        ("model",),
        model={"type": "string", "minLength": 1, "maxLength": 256, "description": "a chat alias that grades"},
        top_n={"type": "integer", "minimum": 1, "maximum": 50},
        weight={"type": "number", "minimum": 0, "maximum": 1, "description": "the grade's share of the final score"},
        timeout_s={"type": "number", "exclusiveMinimum": 0, "maximum": 120},
    )
)
RERANK_OVERRIDE: Schema = {"oneOf": [{k: v for k, v in RERANK.items() if k != "required"}, {"const": False}]}
RERANK_REPORT: Schema = obj(
    ("outcome",),
    model=STR,
    top_n=INT,
    weight=NUM,
    timeout_s=NUM,
    outcome=enum("applied", "skipped"),
    reason=null(STR),
    trace_id=null(STR),
    ms=NUM,
)
FRESHNESS: Schema = closed(
    obj(
        half_life_days=null({"type": "number", "exclusiveMinimum": 0, "maximum": 36500}),
        exclude_expired=BOOL,
    )
)  # a collection's defaults; a search's fields override them one by one
COLLECTION: Schema = obj(
    ("object", "tenant", "name", "model"),
    object={"const": "rag.collection"},
    tenant=STR,
    name=STR,
    model=STR,
    chunking=CHUNKING,
    description=null(STR),
    created_at=TIME,
    updated_at=TIME,
    rerank=null(RERANK),
    freshness=null(FRESHNESS),
    team=null(STR),  # the team it belongs to; null: the whole tenant (decision 0064)
)
DOC_STATUSES = ("queued", "parsing", "chunking", "embedding", "indexed", "failed", "deleted")
DOCUMENT: Schema = obj(
    ("object", "id", "collection", "version", "status"),
    object={"const": "rag.document"},
    id=STR,
    collection=STR,
    version=INT,
    title=null(STR),
    source=null(STR),
    kind=null(STR),
    bytes=null(INT),
    content_hash=null(STR),
    metadata=OBJ,
    users=arr(STR),
    groups=arr(STR),
    valid_until=null(NUM),
    status=STR,
    failed=null(OBJ),
    last_error=null(STR),
    progress=obj(done=null(INT), total=null(INT)),
    chunks=null(INT),
    indexed_version=null(INT),
    job_id=null(STR),
    created_at=TIME,
    updated_at=TIME,
    deleted_at=null(TIME),
)
PUT_DOC: Schema = obj(
    ("text",),
    tenant=SLUG,
    text={"type": "string", "minLength": 1},
    title=STR,
    kind=enum("txt", "md", "html", "jsonl", "csv"),
    source=STR,
    metadata=OBJ,
    users=arr(STR),
    groups=arr(STR),
    valid_until=null(NUM),
)
FORM: Schema = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "contentMediaType": "application/octet-stream"},
        "tenant": STR,
        "title": STR,
        "source": STR,
        "kind": STR,
        "metadata": {"type": "string", "description": "JSON text"},
        "users": {"type": "string", "description": "JSON text"},
        "groups": {"type": "string", "description": "JSON text"},
        "valid_until": STR,
    },
}
HIT: Schema = obj(
    ("document", "chunk", "scores"),
    document=obj(("id",), id=STR, title=null(STR), version=INT, source=null(STR), metadata=OBJ, updated_at=TIME),
    chunk=obj(("id", "text"), id=INT, ordinal=INT, heading_path=arr(STR), text=STR),
    scores={"type": "object", "additionalProperties": null(NUM)},
    ranks={"type": "object", "additionalProperties": null(INT)},
    why=ANY,
)
SEARCH: Schema = obj(
    ("object", "collection", "data"),
    object={"const": "list"},
    collection=STR,
    build=null(STR),
    model=null(STR),
    mode=STR,
    fusion=null(STR),
    candidates={"type": "object", "additionalProperties": INT},
    timings_ms={"type": "object", "additionalProperties": NUM},
    rerank=null(RERANK_REPORT),
    data=arr(HIT),
)
BASE = "/api/rag/collections"
DOCS = BASE + "/{collection}/documents"

RAG: tuple[Op, ...] = (
    Op(
        "POST",
        BASE,
        "Create a collection (an existing one with the same settings: 200)",
        {201: COLLECTION, 200: COLLECTION},
        body=closed(
            obj(
                ("name", "model"),
                tenant=SLUG,
                name=SLUG,
                model=STR,
                chunking=CHUNKING_IN,
                description=STR,
                rerank=RERANK,
                freshness=FRESHNESS,
                team=null(STR),  # a developer: their own team's (the default); others: set or clear it
            )
        ),
        security=EITHER,
        errors=(*COMMON_ERRORS, 409),
    ),
    Op(
        "GET",
        BASE,
        "List collections",
        {200: page(COLLECTION, object={"const": "list"})},
        query=(TENANT_Q,),
        security=EITHER,
    ),
    Op(
        "GET",
        BASE + "/{collection}",
        "One collection with its documents counted by status",
        {200: {**COLLECTION, "properties": {**COLLECTION["properties"], "documents": OBJ}}},
        query=(TENANT_Q,),
        security=EITHER,
    ),
    Op(
        "DELETE",
        BASE + "/{collection}",
        "Delete a collection, its documents, chunks, vectors and blobs",
        {200: obj(("object", "name", "deleted"), object=STR, name=STR, deleted=BOOL)},
        query=(TENANT_Q,),
        security=EITHER,
    ),
    Op(
        "POST",
        BASE + "/{collection}/rechunk",
        "Re-chunk and re-index every document in the shadow (a job); the swap is atomic",
        {202: obj(("object", "collection", "job_id"), object=STR, collection=STR, job_id=STR, state=STR)},
        body=closed(obj(("chunking",), tenant=SLUG, chunking=CHUNKING_IN)),
        security=EITHER,
        errors=(*COMMON_ERRORS, 409),
    ),
    Op(
        "PUT",
        BASE + "/{collection}/rerank",
        "Set the collection's reranking: an LLM alias grades the top_n candidates (keel.rag.rerank)",
        {200: COLLECTION},
        body={**RERANK, "properties": {**RERANK["properties"], "tenant": SLUG}},
        security=EITHER,
    ),
    Op(
        "DELETE",
        BASE + "/{collection}/rerank",
        "Turn the collection's reranking off",
        {200: COLLECTION},
        query=(TENANT_Q,),
        security=EITHER,
    ),
    Op(
        "GET",
        DOCS,
        "List a collection's documents",
        {200: page(DOCUMENT, object={"const": "list"}, has_more=BOOL, last_id=null(STR))},
        query=(TENANT_Q, q("status", enum(*DOC_STATUSES)), q("after", SLUG), q("limit", limit(1000))),
        security=EITHER,
    ),
    Op(
        "PUT",
        DOCS + "/{id:path}",
        "Put a document (JSON text or a multipart file); ingestion runs as a job",
        {201: DOCUMENT, 200: DOCUMENT},
        body=PUT_DOC,
        extra_content={"multipart/form-data": FORM},
        security=EITHER,
        errors=(*COMMON_ERRORS, 409, 415),
    ),
    Op(
        "GET",
        DOCS + "/{id:path}",
        "One document with its ingestion status and job",
        {200: {**DOCUMENT, "properties": {**DOCUMENT["properties"], "job": null(OBJ)}}},
        query=(TENANT_Q,),
        security=EITHER,
    ),
    Op(
        "DELETE",
        DOCS + "/{id:path}",
        "Delete a document",
        {200: {**DOCUMENT, "properties": {**DOCUMENT["properties"], "deleted": BOOL}}},
        query=(TENANT_Q,),
        security=EITHER,
    ),
    Op(
        "POST",
        BASE + "/{collection}/search",
        "Hybrid search, filtered by tenant and document ACL inside the query",
        {200: SEARCH},
        body=obj(
            ("query",),
            query={"type": "string", "minLength": 1},
            top_k=limit(100),
            candidates=limit(1000),
            mode=enum("hybrid", "lexical", "vector"),
            filters={"type": "object", "additionalProperties": STR},
            freshness=FRESHNESS,
            tenant=SLUG,
            user=SLUG,
            groups=arr(SLUG, maxItems=64),
            all=BOOL,
            build=STR,
            rerank=RERANK_OVERRIDE,
        )
        | {"additionalProperties": False},
        security=EITHER,
    ),
)

NAMED: dict[str, Schema] = {
    "Collection": COLLECTION,
    "Document": DOCUMENT,
    "DocumentIn": PUT_DOC,
    "SearchHit": HIT,
    "SearchResult": SEARCH,
    "Rerank": RERANK,
}
