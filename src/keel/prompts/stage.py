"""The `prompt` slot: a chat call that names a prompt is rendered into the call it stands for.

`prompt: {id, version | label, variables}` (OpenAI's Responses shape, sent by the openai SDK as
`extra_body`) → the version's rendered messages, then the call's own messages (conversation turns);
the version's alias when the call's `model` is absent, "" or "prompt"; the version's parameters, tools
and response format wherever the call does not set its own. The trace records the prompt, version,
label and variables; `prompt_version` (the rollups' dimension) is `name@version`. A label in rollout
picks its version by a hash of the user, else the session, else the key: a user keeps one variant.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from keel.errors import InvalidRequest
from keel.gateway.call import Call, Reply
from keel.gateway.pipeline import Handler
from keel.prompts.book import PromptBook, Served
from keel.prompts.render import TemplateError, check_variables, render_messages
from keel.types import ChatRequest, Message
from keel.wire.openai_chat import parse_message

USE_PROMPT_MODEL = ("", "prompt")  # a call's `model` that defers to the version's alias
_FIELDS = ("temperature", "top_p", "max_tokens", "tool_choice")  # ChatRequest fields a version's params may set


class PromptStage:
    def __init__(self, book: PromptBook) -> None:
        self._book = book

    async def __call__(self, call: Call, next: Handler) -> Reply:
        request = call.request
        if isinstance(request, ChatRequest) and "prompt" in request.extra:
            self._apply(call, request)
        return await next(call)

    def _apply(self, call: Call, request: ChatRequest) -> None:
        assert call.principal is not None  # the auth slot runs first
        ref = request.extra["prompt"]
        name, version, label, variables = _reference(ref)
        subject = call.user or call.session or call.principal.key_id  # a rollout is sticky per subject
        served, variant = self._book.resolve(call.principal.tenant, name, version, label, subject)
        try:
            values = check_variables(served.names, variables)
        except TemplateError as err:
            raise InvalidRequest(err.message, f"prompt.{err.where}") from None
        if served.validator is not None:
            _validate(served, variables)
        rendered = render_messages(served.messages, values)
        call.request = merged(request, served, tuple(parse_message(m, i) for i, m in enumerate(rendered)))
        v = served.version
        record = call.trace
        record.alias = call.request.model
        record.prompt_version = f"{v.name}@{v.version}"
        record.tags["keel.prompt"] = v.name
        record.tags["keel.prompt_version"] = str(v.version)
        if label is not None:
            record.tags["keel.prompt_label"] = label
            record.tags["keel.prompt_variant"] = variant
        if variables:
            record.tags["keel.prompt_variables"] = orjson.dumps(variables).decode()


def _reference(ref: Any) -> tuple[str, int | None, str | None, dict[str, Any]]:
    if not isinstance(ref, dict):
        raise InvalidRequest("'prompt' must be an object: {id, version | label, variables}.", "prompt")
    name = ref.get("id")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("'prompt.id' must be the prompt's name.", "prompt.id")
    version, label = ref.get("version"), ref.get("label")
    if version is not None and label is not None:
        raise InvalidRequest("Name a prompt 'version' or a 'label', not both.", "prompt.version")
    if isinstance(version, str) and version.isdigit():
        version = int(version)
    if version is not None and (type(version) is not int or version < 1):
        raise InvalidRequest("'prompt.version' must be a version number (1, 2, …).", "prompt.version")
    if label is not None and (not isinstance(label, str) or not label):
        raise InvalidRequest("'prompt.label' must be a label name.", "prompt.label")
    variables = ref.get("variables") or {}
    if not isinstance(variables, dict):
        raise InvalidRequest("'prompt.variables' must be an object.", "prompt.variables")
    return name, version, label, variables


def _validate(served: Served, variables: dict[str, Any]) -> None:
    error = next(iter(served.validator.iter_errors(variables)), None)
    if error is None:
        return
    path = ".".join(str(p) for p in error.absolute_path)
    raise InvalidRequest(f"Prompt variables: {error.message}", "prompt.variables" + (f".{path}" if path else ""))


def merged(request: ChatRequest, served: Served, rendered: tuple[Message, ...]) -> ChatRequest:
    """The call the prompt stands for: the version's defaults under the call's own choices."""
    content = served.version.content
    model = request.model
    if model in USE_PROMPT_MODEL:
        if not content.alias:
            raise InvalidRequest("This prompt version names no alias: set 'model' on the call.", "model")
        model = content.alias
    params = content.params or {}
    changes: dict[str, Any] = {"model": model, "messages": rendered + request.messages}
    for key in _FIELDS:
        if key in params and getattr(request, key) is None:
            changes[key] = params[key]
    if "stop" in params and not request.stop:
        stop = params["stop"]
        changes["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)
    if content.tools and not request.tools:
        changes["tools"] = content.tools
    if content.response_format is not None and request.response_format is None:
        changes["response_format"] = content.response_format
    extra = {k: v for k, v in request.extra.items() if k != "prompt"}
    for key, value in params.items():
        if key not in _FIELDS and key != "stop":
            extra.setdefault(key, value)
    changes["extra"] = extra
    return dataclasses.replace(request, **changes)
