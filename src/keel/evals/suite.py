"""Suites: promptfoo-shaped YAML (as JSON once loaded) turned into the items a run scores.

    description: support answers
    prompts: ["Answer briefly: {{question}}", {id: "keel:support-answer@production"}]
    providers: [support-fast, "openai:gpt-4o-mini", {id: claude, config: {temperature: 0}}]
    defaultTest: {assert: [...], vars: {...}, threshold: 0.8, options: {provider: judge-alias}}
    tests: [{description, vars, assert, threshold, options, metadata}, ...] | "dataset:NAME[@VERSION]"

A prompt is a string (one user message, templated with the test's vars like promptfoo's `{{ var }}`; a
JSON array of messages is a chat), a mapping with `raw`/`messages`, or `keel:NAME@VERSION|LABEL`: a Keel
prompt version the gateway renders. A provider is a Keel alias; promptfoo ids (`openai:gpt-4o-mini`,
`openai:chat:gpt-4o-mini`) name the alias of their model. A test's key (what a baseline is compared on)
is its position, with the prompt's and the provider's labels when a suite has several: changing a
prompt's text keeps the keys. Unknown keys and unsupported promptfoo features are errors naming them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.evals.assertions import Assertion, InvalidSuite, parse_assertion, template

TOP_KEYS = frozenset({"description", "prompts", "providers", "tests", "defaultTest", "grader"})
IGNORED_TOP = frozenset(  # promptfoo settings about its own CLI/UI: meaningless here, accepted and unused
    {"sharing", "outputPath", "env", "commandLineOptions", "evaluateOptions", "writeLatestResults", "tags", "metadata"}
)
TEST_KEYS = frozenset({"description", "vars", "assert", "threshold", "options", "metadata", "keel"})
OPTION_KEYS = frozenset({"provider"})
PROVIDER_PREFIXES = frozenset(
    {"openai", "anthropic", "azure", "azureopenai", "bedrock", "vertex", "google", "gemini", "mistral", "groq",
     "ollama", "openrouter", "together", "deepseek", "xai", "keel", "litellm", "fireworks", "perplexity"}
)  # fmt: skip
PROVIDER_KINDS = frozenset({"chat", "messages", "completion", "responses", "converse"})
PARAMS = frozenset(
    {"temperature", "max_tokens", "max_completion_tokens", "top_p", "seed", "stop", "tools", "tool_choice",
     "response_format", "presence_penalty", "frequency_penalty", "reasoning_effort", "metadata"}
)  # fmt: skip
MAX_ITEMS = 100_000


@dataclass(frozen=True, slots=True)
class Prompt:
    label: str
    messages: tuple[Mapping[str, Any], ...] = ()  # templates; empty with a Keel prompt or the item's own
    keel: Mapping[str, Any] | None = None  # {id, version | label}: rendered by the gateway


@dataclass(frozen=True, slots=True)
class Provider:
    label: str
    alias: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def tools(self) -> Sequence[Mapping[str, Any]]:
        tools = self.params.get("tools")
        return tools if isinstance(tools, list) else ()


@dataclass(frozen=True, slots=True)
class Test:
    index: int
    description: str | None
    vars: Mapping[str, Any]
    asserts: tuple[Assertion, ...]
    threshold: float | None
    grader: str | None
    expected: str | None = None
    context: tuple[str, ...] = ()
    messages: tuple[Mapping[str, Any], ...] = ()  # a dataset item's own chat
    trace_id: str | None = None


@dataclass(frozen=True, slots=True)
class Item:
    key: str
    test: Test
    prompt: Prompt
    provider: Provider

    def body(self) -> dict[str, Any]:
        """The chat request this item sends (OpenAI's shape; a Keel prompt is rendered by the gateway)."""
        body: dict[str, Any] = {"model": self.provider.alias, **self.provider.params}
        if self.prompt.keel is not None:
            body["prompt"] = {**self.prompt.keel, "variables": dict(self.test.vars)}
        elif self.prompt.messages:
            body["messages"] = [template(dict(m), self.test.vars) for m in self.prompt.messages]
        else:
            body["messages"] = [dict(m) for m in self.test.messages]
        return body


@dataclass(frozen=True, slots=True)
class Suite:
    name: str
    prompts: tuple[Prompt, ...]
    providers: tuple[Provider, ...]
    tests: tuple[Test, ...]

    def items(self) -> list[Item]:
        many_p, many_v = len(self.prompts) > 1, len(self.providers) > 1
        out = []
        for t in self.tests:
            for p in self.prompts:
                for v in self.providers:
                    key = f"t{t.index}" + (f"|{p.label}" if many_p else "") + (f"|{v.label}" if many_v else "")
                    out.append(Item(key, t, p, v))
        return out


def parse_suite(doc: Any, name: str = "suite", python_modules: Sequence[str] = ()) -> Suite:
    """The suite of a loaded YAML document whose `tests` are a list (dataset references resolved).
    `python` assertions may name functions of `python_modules` (and their submodules) only; the check
    runs before any import."""
    if not isinstance(doc, Mapping):
        raise InvalidSuite("a suite is a mapping (prompts, providers, tests)", "suite")
    _check_python(doc, python_modules)
    unknown = sorted(set(doc) - TOP_KEYS - IGNORED_TOP)
    if unknown:
        raise InvalidSuite(f"unsupported key(s) {unknown}; a suite takes {sorted(TOP_KEYS)}", unknown[0])
    providers = _providers(doc.get("providers"))
    grader = doc.get("grader")
    default = _default_test(doc.get("defaultTest"))
    tests = doc.get("tests")
    if not isinstance(tests, list) or not tests:
        raise InvalidSuite("`tests` is a non-empty list of tests (or dataset:NAME)", "tests")
    default_grader = default.get("grader") or (grader if isinstance(grader, str) else None) or providers[0].alias
    parsed = tuple(_test(t, i, default, default_grader) for i, t in enumerate(tests, 1))
    prompts = _prompts(doc.get("prompts"), all(t.messages for t in parsed))
    suite = Suite(str(doc.get("description") or name), prompts, providers, parsed)
    if len(parsed) * len(prompts) * len(providers) > MAX_ITEMS:
        raise InvalidSuite(f"more than {MAX_ITEMS} items (tests × prompts × providers)", "tests")
    return suite


def _check_python(doc: Mapping[str, Any], allowed: Sequence[str]) -> None:
    default = doc.get("defaultTest")
    places = [("defaultTest", default)] if isinstance(default, Mapping) else []
    tests = doc.get("tests")
    places += [(f"tests[{i}]", t) for i, t in enumerate(tests)] if isinstance(tests, list) else []
    for where, test in places:
        asserts = test.get("assert") if isinstance(test, Mapping) else None
        for j, a in enumerate(asserts if isinstance(asserts, list) else ()):
            if not isinstance(a, Mapping) or a.get("type") not in ("python", "not-python"):
                continue
            module = str(a.get("value") or "").partition(":")[0]
            if not any(module == m or module.startswith(m + ".") for m in allowed):
                fix = f"list {module!r} in evals.python_modules in keel.yaml" if module else "value is module:function"
                raise InvalidSuite(
                    f"python scorers of module {module!r} are not allowed here: {fix}", f"{where}.assert[{j}].value"
                )


def alias_of(provider_id: str) -> str:
    """A Keel alias from a provider id: `openai:chat:gpt-4o-mini` → `gpt-4o-mini`; an alias stays itself."""
    parts = provider_id.split(":")
    if len(parts) > 1 and parts[0].lower() in PROVIDER_PREFIXES:
        parts = parts[1:]
        if len(parts) > 1 and parts[0].lower() in PROVIDER_KINDS:
            parts = parts[1:]
    return ":".join(parts)


def _providers(raw: Any) -> tuple[Provider, ...]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise InvalidSuite("`providers` lists Keel aliases (or promptfoo provider ids)", "providers")
    out = []
    for i, p in enumerate(raw):
        where = f"providers[{i}]"
        if isinstance(p, str):
            out.append(Provider(p, alias_of(p)))
            continue
        if not isinstance(p, Mapping) or not isinstance(p.get("id"), str):
            raise InvalidSuite("a provider is an alias or a mapping with `id`", where)
        extra = sorted(set(p) - {"id", "label", "config"})
        if extra:
            raise InvalidSuite(f"unsupported key(s) {extra}; a provider takes id, label, config", where)
        config = p.get("config") or {}
        if not isinstance(config, Mapping):
            raise InvalidSuite("`config` is a mapping of request parameters", f"{where}.config")
        wrong = sorted(set(config) - PARAMS)
        if wrong:
            raise InvalidSuite(f"unsupported parameter(s) {wrong}; supported: {sorted(PARAMS)}", f"{where}.config")
        out.append(Provider(str(p.get("label") or p["id"]), alias_of(p["id"]), dict(config)))
    labels = [p.label for p in out]
    if len(set(labels)) != len(labels):
        raise InvalidSuite("two providers share a label: give each a distinct `label`", "providers")
    return tuple(out)


def _prompts(raw: Any, items_have_messages: bool) -> tuple[Prompt, ...]:
    if raw is None and items_have_messages:
        return (Prompt("item"),)
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise InvalidSuite("`prompts` lists prompts (text, chat messages or keel:NAME@REF)", "prompts")
    out = [_prompt(p, f"prompts[{i}]", f"p{i + 1}") for i, p in enumerate(raw)]
    if len({p.label for p in out}) != len(out):
        raise InvalidSuite("two prompts share a label: give each a distinct `label`", "prompts")
    return tuple(out)


def _prompt(p: Any, where: str, label: str) -> Prompt:
    if isinstance(p, Mapping):
        extra = sorted(set(p) - {"id", "raw", "label", "messages"})
        if extra:
            raise InvalidSuite(f"unsupported key(s) {extra}; a prompt takes id, raw, messages, label", where)
        label = str(p.get("label") or p.get("id") or label)
        if isinstance(p.get("messages"), list):
            return Prompt(label, _messages(p["messages"], where))
        text = p.get("raw") if p.get("raw") is not None else p.get("id")
        if not isinstance(text, str):
            raise InvalidSuite("a prompt mapping needs `raw`, `messages` or `id`", where)
        return _text_prompt(text, where, label)
    if not isinstance(p, str):
        raise InvalidSuite("a prompt is text, chat messages, or keel:NAME@REF", where)
    return _text_prompt(p, where, label)


def _text_prompt(text: str, where: str, label: str) -> Prompt:
    if text.startswith("keel:"):
        name, _, ref = text[5:].partition("@")
        if not name:
            raise InvalidSuite("keel:NAME[@VERSION|LABEL]", where)
        keel: dict[str, Any] = {"id": name}
        if ref.isdigit():
            keel["version"] = int(ref)
        elif ref:
            keel["label"] = ref
        return Prompt(label if label != text else name, keel=keel)
    if text.startswith("file://"):
        raise InvalidSuite(f"{text}: files are read by `keel eval run` from the suite's folder", where)
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            chat = json.loads(stripped)
        except ValueError:
            chat = None
        if isinstance(chat, list):
            return Prompt(label, _messages(chat, where))
    return Prompt(label, ({"role": "user", "content": text},))


def _messages(raw: list[Any], where: str) -> tuple[Mapping[str, Any], ...]:
    for i, m in enumerate(raw):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise InvalidSuite("a message is a mapping with `role` and `content`", f"{where}.messages[{i}]")
    return tuple(dict(m) for m in raw)


def _default_test(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {"vars": {}, "assert": [], "threshold": None, "grader": None}
    if not isinstance(raw, Mapping):
        raise InvalidSuite("`defaultTest` is a mapping like a test", "defaultTest")
    _check_test_keys(raw, "defaultTest")
    asserts = [parse_assertion(a, f"defaultTest.assert[{i}]") for i, a in enumerate(_list(raw, "assert"))]
    return {
        "vars": _vars(raw, "defaultTest"),
        "assert": asserts,
        "threshold": _threshold(raw, "defaultTest"),
        "grader": _grader(raw, "defaultTest"),
    }


def _test(raw: Any, index: int, default: Mapping[str, Any], grader: str) -> Test:
    where = f"tests[{index - 1}]"
    if not isinstance(raw, Mapping):
        raise InvalidSuite("a test is a mapping (vars, assert, ...)", where)
    keel: Mapping[str, Any] = raw["keel"] if isinstance(raw.get("keel"), Mapping) else {}
    _check_test_keys(raw, where)
    own = [parse_assertion(a, f"{where}.assert[{i}]") for i, a in enumerate(_list(raw, "assert"))]
    threshold = _threshold(raw, where)
    description = raw.get("description")
    return Test(
        index=index,
        description=str(description) if description is not None else None,
        vars={**default["vars"], **_vars(raw, where)},
        asserts=(*default["assert"], *own),
        threshold=threshold if threshold is not None else default["threshold"],
        grader=_grader(raw, where) or grader,
        expected=keel.get("expected"),
        context=tuple(str(c) for c in keel.get("context") or ()),
        messages=tuple(keel.get("messages") or ()),
        trace_id=keel.get("trace_id"),
    )


def _check_test_keys(raw: Mapping[str, Any], where: str) -> None:
    extra = sorted(set(raw) - TEST_KEYS)
    if extra:
        raise InvalidSuite(f"unsupported key(s) {extra}; a test takes {sorted(TEST_KEYS)}", where)
    options = raw.get("options") or {}
    if not isinstance(options, Mapping) or set(options) - OPTION_KEYS:
        raise InvalidSuite(f"`options` takes {sorted(OPTION_KEYS)} (the judge's alias)", f"{where}.options")


def _list(raw: Mapping[str, Any], key: str) -> list[Any]:
    value = raw.get(key) or []
    if not isinstance(value, list):
        raise InvalidSuite(f"`{key}` is a list", key)
    return value


def _vars(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    value = raw.get("vars") or {}
    if not isinstance(value, Mapping):
        raise InvalidSuite("`vars` is a mapping of names to values", f"{where}.vars")
    return dict(value)


def _threshold(raw: Mapping[str, Any], where: str) -> float | None:
    value = raw.get("threshold")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSuite("`threshold` is a number (the weighted score a test needs)", f"{where}.threshold")
    return float(value)


def _grader(raw: Mapping[str, Any], where: str) -> str | None:
    provider = (raw.get("options") or {}).get("provider")
    if provider is None:
        return None
    if isinstance(provider, Mapping):
        provider = provider.get("id")
    if not isinstance(provider, str):
        raise InvalidSuite("`options.provider` is the judge's alias", f"{where}.options.provider")
    return alias_of(provider)


def dataset_tests(items: Sequence[Any]) -> list[dict[str, Any]]:
    """Suite tests from dataset items (`DatasetItem`s): vars from `input.vars`, the chat from
    `input.messages`, and the expected output, context and trace link carried under `keel`."""
    tests = []
    for it in items:
        keel = {"expected": it.expected, "context": list(it.context), "trace_id": it.trace_id}
        if it.input.get("messages"):
            keel["messages"] = list(it.input["messages"])
        test: dict[str, Any] = {"vars": dict(it.input.get("vars") or {}), "keel": keel}
        if isinstance(it.metadata.get("assert"), list):  # a promptfoo CSV's __expected
            test["assert"] = list(it.metadata["assert"])
        if it.metadata.get("description"):
            test["description"] = str(it.metadata["description"])
        tests.append(test)
    return tests
