"""Replay a recorded call: the stored request (messages, parameters, tools) through the pipeline again.

The admin API runs it as the original call's tenant: the Call is built with that tenant's Principal
already set, which AuthStage honours (HTTP edges never set one, so client calls still need a key).
Limits, failover and tracing apply as to any call; the cache is skipped both ways, so the replay
reaches a provider. `alias` re-routes through another alias; `model` ("provider/model") bypasses
alias routing with a one-target plan, still within the tenant's regions. The new trace carries the
tag `keel.replay_of=<original id>`. A trace stored without its request cannot be replayed; a
redacted one is replayed as stored (with its placeholders), and the answer says which kinds were.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from typing import Any

from keel.api.openai import new_trace_id
from keel.cache.stage import CacheState
from keel.errors import InvalidRequest, KeelError, NotFound, PermissionDenied
from keel.gateway.call import Call
from keel.gateway.directives import Directives
from keel.runtime.components import Runtime
from keel.traces.redaction import TAG as REDACTED_TAG
from keel.types import ChatRequest, Principal, RoutePlan, Target, TraceRecord
from keel.wire import openai_responses as responses
from keel.wire.anthropic_request import parse_request as parse_messages
from keel.wire.openai_chat import parse_request as parse_chat

REPLAY_TAG = "keel.replay_of"


def _parse_responses(body: Any) -> ChatRequest:
    """A Responses call replays on its own input; one that continued a stored conversation cannot
    (the conversation may be gone, and its replay would answer another question)."""
    parsed = responses.parse_request(body)
    if parsed.previous_response_id is not None or any(i["type"] == "item_reference" for i in parsed.items):
        raise InvalidRequest("A responses call that continues a stored conversation cannot be replayed.", None)
    return responses.chat_request(parsed)


_PARSERS = {"chat": parse_chat, "messages": parse_messages, "responses": _parse_responses}
_SKIP_CACHE = Directives(read=False, write=False)


@dataclass(frozen=True, slots=True)
class ReplayAsk:
    alias: str | None = None
    model: str | None = None  # provider/model
    prompt_version: int | None = None  # a call by prompt: render this version instead, with its variables

    @classmethod
    def from_body(cls, body: Any) -> ReplayAsk:
        if body is None:
            return cls()
        if not isinstance(body, dict):
            raise InvalidRequest('The body must be an object: {"alias": null, "model": null}.', None)
        for field in body:
            if field not in ("alias", "model", "prompt_version"):
                raise InvalidRequest(f"Unknown field '{field}'; use 'alias', 'model' or 'prompt_version'.", field)
        version = body.get("prompt_version")
        if version is not None and (type(version) is not int or version < 1):
            raise InvalidRequest("'prompt_version' must be a version number (1, 2, …).", "prompt_version")
        for field in ("alias", "model"):
            if body.get(field) is not None and not (isinstance(body[field], str) and body[field]):
                raise InvalidRequest(f"'{field}' must be a non-empty string.", field)
        if body.get("alias") and body.get("model"):
            raise InvalidRequest("Give 'alias' or 'model' (provider/model), not both.", "model")
        return cls(body.get("alias"), body.get("model"), version)


async def replay(rt: Runtime, trace_id: str, ask: ReplayAsk) -> dict[str, Any]:
    """Replay trace `trace_id`; both sides as views, the original as stored, the replay redacted alike."""
    row = await asyncio.to_thread(rt.store.get_trace, trace_id)
    if row is None:
        raise NotFound(f"No trace with id '{trace_id}'.")
    body, chat = _recorded(row, ask.alias, ask.prompt_version)
    tenant = await asyncio.to_thread(rt.store.get_tenant, row.tenant or "")
    if tenant is None:
        raise NotFound(f"Trace '{trace_id}' belongs to tenant '{row.tenant}', which no longer exists.")
    principal = Principal(tenant.name, row.key_id or "replay", user=row.user, regions=tenant.regions)
    tags = {k: v for k, v in row.tags.items() if not k.startswith("keel.")}
    record = _record(row, body, chat, rt.config.traces.store_payloads)
    call = Call(chat, record, principal=principal, user=row.user, feature=row.feature, tags=tags or None)
    call.state(CacheState).directives = _SKIP_CACHE
    if ask.model is not None:
        call.plan = direct_plan(rt, ask.model, chat.model, principal)
        call.trace.route = {"replay_target": ask.model}
    failure: KeelError | None = None
    try:
        reply = await rt.pipeline(call)
        await reply.collect()
    except KeelError as err:
        if err.status < 500:
            raise  # the ask was wrong (unknown alias, region, limits): say so, as for any call
        failure = err  # a provider failed: that is the replay's answer, shown beside the original
    replayed = rt.redactor.scrub(call.trace) if rt.redactor is not None else call.trace
    redacted = row.tags.get(REDACTED_TAG)
    return {
        "original": view(row),
        "replay": view(replayed),
        "redacted": sorted(str(redacted).split(",")) if redacted else [],
        "error": None if failure is None else failure.message,
    }


def _recorded(row: TraceRecord, alias: str | None, version: int | None) -> tuple[dict[str, Any], ChatRequest]:
    """The stored request body (with `alias` as its model, and its prompt pinned to `version`, if given)
    and its parsed ChatRequest."""
    if row.request is None:
        why = "traces.store_payloads was off" if REDACTED_TAG not in row.tags else "its payload was withheld"
        raise InvalidRequest(f"Trace '{row.id}' has no stored request ({why}); there is nothing to replay.", None)
    parse = _PARSERS.get(row.endpoint)
    if parse is None:
        raise InvalidRequest(f"Only chat calls can be replayed; trace '{row.id}' is {row.endpoint}.", None)
    body = dict(row.request)
    if alias is not None:
        body["model"] = alias
    if version is not None:
        ref = body.get("prompt")
        if not isinstance(ref, dict):
            raise InvalidRequest(f"Trace '{row.id}' is not a call by prompt: no version to change.", "prompt_version")
        body["prompt"] = {**{k: v for k, v in ref.items() if k != "label"}, "version": version}
    return body, parse(body)


def _record(row: TraceRecord, body: dict[str, Any], chat: ChatRequest, store_payloads: bool) -> TraceRecord:
    """The replay's trace. The call carries the original's attribution (not its session: a replay is no
    part of that workflow) and its tags, without the keel.* facts of the original call."""
    return TraceRecord(
        id=new_trace_id(),
        started_at=time.time(),
        endpoint=row.endpoint,
        tags={REPLAY_TAG: row.id},
        alias=chat.model,
        request=body if store_payloads else None,
        stream=chat.stream,
        prompt_version=row.prompt_version,
    )


def direct_plan(rt: Runtime, spec: str, alias: str, principal: Principal) -> RoutePlan:
    """A one-target plan for "provider/model": the configured target if one matches, else a bare one."""
    provider, _, model = spec.partition("/")
    providers = rt.config.providers
    if provider not in providers or not model:
        known = ", ".join(sorted(providers))
        raise InvalidRequest(f"'{spec}' is not provider/model with a configured provider ({known}).", "model")
    region = providers[provider].region
    if principal.regions is not None and region not in principal.regions:
        allowed = ", ".join(principal.regions)
        raise PermissionDenied(f"Provider '{provider}' (region {region}) is outside tenant's regions [{allowed}].")
    target = Target(provider, model)
    for a in rt.config.models.values():
        for t in a.targets:
            if (t.provider, t.model) == (provider, model):
                caps = None if t.capabilities is None else frozenset(t.capabilities)
                target = replace(target, context_window=t.context_window, capabilities=caps)
    return RoutePlan(alias=alias, targets=(target,), reason=f"replay: {spec}", explain={"replay_target": spec})


def view(r: TraceRecord) -> dict[str, Any]:
    """One side of the comparison: the answer, and what it took."""
    response = r.response or {}
    return {
        "trace_id": r.id,
        "alias": r.alias,
        "provider": r.provider,
        "model": r.model,
        "status": r.status,
        "error": r.error_message,
        "content": response.get("content"),
        "tool_calls": response.get("tool_calls") or [],
        "finish_reason": response.get("finish_reason"),
        "input_tokens": r.input_tokens,
        "output_tokens": r.output_tokens,
        "cost_usd": r.cost_usd,
        "latency_ms": r.latency_ms,
        "ttft_ms": r.ttft_ms,
        "stream": r.stream,
    }
