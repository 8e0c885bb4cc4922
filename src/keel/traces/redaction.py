"""Redaction: secrets and personal data become `[REDACTED:kind]` before a trace is stored or exported.

Each policy (the default, and each tenant's override) is a list of compiled rules. A rule is skipped
unless one of its literal triggers is in the text (`sk-`, `@`, `+`, ...: a C substring search), and
its pattern starts with a literal or a narrow class so `re` skips ahead in C; validators run only
on candidates (Luhn and card prefixes, phone digit counts, entropy of key=value secrets). One big
alternation was measured ~20x slower: `re` tries every alternative at every position. Keel's virtual
keys (by shape) and the configured provider keys and admin token (exactly) are redacted under every
policy, even one with no detector. Attribution fields (user, feature, session, prompt version) get
only the credential detectors: they are identifiers people choose, and usage rollups group by them.

`Redactor.scrub` never mutates the record it is given (the writer and exporter threads read the same
one): it returns a redacted copy tagged `keel.redacted=<kinds>`, or the record itself when nothing
matched. If redaction itself fails, the payload fields are withheld rather than stored as they are.
`Credentials` redacts free text (an upstream's error message) of credentials only, under any policy.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from keel.catalog import CATALOG
from keel.config import Config, CustomDetectorConfig, Detector, RedactionConfig
from keel.types import Span, TraceRecord

log = logging.getLogger("keel.redaction")

TAG = "keel.redacted"  # on a redacted record: the kinds that were replaced, comma-separated
PLACEHOLDER = "[REDACTED:{}]"
_CREDENTIALS: tuple[Detector, ...] = ("api_keys", "secrets")

Replace = Callable[[str, str], str | None]  # (matched text, kind) → replacement, or None to keep it


def _whole(text: str, kind: str) -> str | None:
    return PLACEHOLDER.format(kind)


def _bearer(text: str, kind: str) -> str | None:
    head = text[: len(text) - len(text.split()[-1])]
    return head + PLACEHOLDER.format(kind)


_SEPARATOR = re.compile(r"[:=]\s*[\"']?")  # between a secret's name and its value


def entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def _secret(text: str, kind: str) -> str | None:
    """key=value: only a value that looks generated (letters and digits, ≥ 3 bits/char) is a secret."""
    m = _SEPARATOR.search(text)
    if m is None:
        return None
    value = text[m.end() :]
    if not (any(c.isdigit() for c in value) and any(c.isalpha() for c in value) and entropy(value) >= 3.0):
        return None
    return text[: m.end()] + PLACEHOLDER.format(kind)


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(text: str, kind: str) -> str | None:
    digits = "".join(c for c in text if c.isdigit())
    if 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn(digits):
        return PLACEHOLDER.format(kind)
    return None


def _phone(text: str, kind: str) -> str | None:
    count = sum(c.isdigit() for c in text)
    return PLACEHOLDER.format(kind) if 8 <= count <= 15 else None


@dataclass(frozen=True, slots=True)
class Rule:
    """One detector pattern. Patterns start with a literal or a narrow character class, so `re` skips
    ahead in C; what a leading `\\b` or look-behind would say is checked in code (`before`), since
    either would make `re` try every position."""

    kind: str  # the placeholder's kind
    pattern: str
    replace: Replace = _whole
    triggers: tuple[str, ...] = ()  # the rule runs only if one of these is in the text (lowercased if `lower`)
    lower: bool = False
    before: str | None = None  # a match preceded by a letter, digit, _ or one of these is no match
    left: str = ""  # extend a match leftwards over these characters (an email's local part)


_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_KEY_WORDS = ("key", "secret", "token", "passw", "pwd")
_DIGITS = tuple("0123456789")

# The built-in detectors, applied in this order (a placeholder never matches a later one).
DETECTORS: dict[str, tuple[Rule, ...]] = {
    "api_keys": (
        # OpenAI, Anthropic (sk-ant-…), DeepSeek, …: a long random last segment
        Rule("api_key", r"sk-(?:[A-Za-z0-9]+[_-])*[A-Za-z0-9]{16,}", triggers=("sk-",), before="-"),
        Rule("api_key", r"[sr]k_(?:live|test)_[A-Za-z0-9]{16,}", triggers=("k_live_", "k_test_"), before=""),
        Rule("api_key", r"A(?:KIA|SIA)[0-9A-Z]{16}\b", triggers=("AKIA", "ASIA"), before=""),
        Rule("api_key", r"gh[pousr]_[A-Za-z0-9]{36,}", triggers=("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), before=""),
        Rule("api_key", r"github_pat_[A-Za-z0-9_]{22,}", triggers=("github_pat_",), before=""),
        Rule("api_key", r"xox[abposr]-[A-Za-z0-9-]{10,}", triggers=("xox",), before=""),
        Rule("api_key", r"AIza[0-9A-Za-z_-]{35}", triggers=("AIza",), before=""),
        Rule("api_key", r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", triggers=("eyJ",), before=""),
        Rule("api_key", r"[Bb]earer\s+[A-Za-z0-9._~+/-]{16,}=*", _bearer, triggers=("earer",), before=""),
    ),
    "secrets": (
        Rule(
            "secret",
            r"(?i:(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?key|(?:access|auth|refresh)[_-]?token|token"
            r"|password|passwd|pwd|client[_-]?secret|private[_-]?key)\b[\"']?\s*[:=]\s*[\"']?)"
            r"[A-Za-z0-9_\-./+=]{16,}",
            _secret,
            triggers=_KEY_WORDS,
            lower=True,
            before="",
        ),
    ),
    "emails": (Rule("email", r"@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b", triggers=("@",), left=_ALNUM + "._%+-"),),
    "cards": (Rule("card", r"[0-9](?:[ -]?[0-9]){12,18}(?![0-9-])", _card, triggers=_DIGITS, before="-"),),
    "phones": (
        Rule("phone", r"\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,6}(?!\d)", _phone, triggers=("+",), before="+"),
        Rule(
            "phone",
            r"(?:\([0-9]{3}\) ?|[0-9]{3}[ .-])[0-9]{3}[ .-][0-9]{4}(?![0-9])",
            _phone,
            triggers=_DIGITS,
            before="(",
        ),
    ),
}
VIRTUAL_KEY = Rule("api_key", r"sk-keel-[A-Za-z0-9_-]{20,}", triggers=("sk-keel-",))


class Policy:
    """One set of detectors, compiled: `full` for content, `credentials` for attribution fields."""

    def __init__(self, detectors: Iterable[Detector], custom: Iterable[CustomDetectorConfig], always: list[Rule]):
        enabled = list(dict.fromkeys(detectors))
        rules = [*always, *(r for d in enabled for r in DETECTORS[d])]
        rules += [Rule(c.name, c.pattern) for c in custom]
        credentials = {id(r) for r in [*always, *(r for d in enabled if d in _CREDENTIALS for r in DETECTORS[d])]}
        self.full = [_Compiled(r) for r in rules]
        self.credentials = [c for c in self.full if id(c.rule) in credentials]


class _Compiled:
    __slots__ = ("not_before", "pattern", "rule")

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.pattern = re.compile(rule.pattern)
        self.not_before = None if rule.before is None else frozenset(_ALNUM + "_" + rule.before)

    def may_match(self, text: str, lowered: str) -> bool:
        """Cheap: a trigger is there (C substring search), or the pattern finds a candidate."""
        triggers = self.rule.triggers
        if triggers:
            haystack = lowered if self.rule.lower else text
            return any(t in haystack for t in triggers)
        return self.pattern.search(text) is not None


def _strings(value: Any, into: list[str]) -> None:
    if isinstance(value, str):
        into.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _strings(v, into)
    elif isinstance(value, list | tuple):
        for v in value:
            _strings(v, into)


Rules = list[_Compiled]


class _Pass:
    """One record's redaction: substitutes, and remembers which kinds it replaced."""

    def __init__(self) -> None:
        self.found: set[str] = set()

    def text(self, rules: Rules, text: str) -> str:
        for c in rules:
            new = self._apply(c, text)
            if new is not text:
                text = new
        return text

    def _apply(self, c: _Compiled, text: str) -> str:
        rule, not_before = c.rule, c.not_before
        out: list[str] = []
        pos = 0
        for m in c.pattern.finditer(text):
            start, end = m.start(), m.end()
            if start < pos:
                continue
            if rule.left:
                while start > pos and text[start - 1] in rule.left:
                    start -= 1
                if start == m.start():
                    continue
            if not_before is not None and start > 0 and text[start - 1] in not_before:
                continue
            replacement = rule.replace(text[start:end], rule.kind)
            if replacement is None:
                continue
            out += (text[pos:start], replacement)
            pos = end
            self.found.add(rule.kind)
        if not out:
            return text
        out.append(text[pos:])
        return "".join(out)

    def walk(self, c: Rules, value: Any) -> Any:
        """`value` with every string inside redacted; the same object when nothing changed."""
        if isinstance(value, str):
            return self.text(c, value)
        if isinstance(value, dict):
            changed: dict[Any, Any] | None = None
            for k, v in value.items():
                new = self.walk(c, v)
                if new is not v:
                    changed = changed if changed is not None else dict(value)
                    changed[k] = new
            return value if changed is None else changed
        if isinstance(value, list | tuple):
            items = [self.walk(c, v) for v in value]
            return value if all(a is b for a, b in zip(items, value, strict=True)) else type(value)(items)
        return value


_CONTENT = ("request", "response", "attempt_log", "error_message")
_ATTRIBUTION = ("user", "feature", "session", "prompt_version")


class Redactor:
    """Per-tenant policies, compiled once; `scrub` a record, or `redact` any JSON-shaped value."""

    def __init__(self, cfg: RedactionConfig, secrets: Iterable[str] = ()) -> None:
        always = _always(secrets)
        self.credentials = Credentials(always=always)
        self._default = Policy(cfg.detectors, cfg.custom, always)
        self._tenants = {
            name: Policy(
                t.detectors if t.detectors is not None else cfg.detectors,
                t.custom if t.custom is not None else cfg.custom,
                always,
            )
            for name, t in cfg.tenants.items()
        }

    @classmethod
    def from_config(cls, config: Config) -> Redactor:
        return cls(config.redaction, known_secrets(config))

    def policy(self, tenant: str | None) -> Policy:
        return self._tenants.get(tenant or "", self._default)

    def redact(self, tenant: str | None, value: Any) -> Any:
        return _Pass().walk(self.policy(tenant).full, value)

    def scrub_span(self, span: Span) -> Span:
        """A span with its attributes redacted by its tenant's policy (`span` itself when nothing matched);
        never raises: on a bug its attributes are withheld."""
        if not span.attributes:
            return span
        try:
            attributes = self.redact(span.tenant, span.attributes)
        except Exception:
            log.exception(
                "redacting span %s of trace %s failed; its attributes are withheld", span.span_id, span.trace_id
            )
            return dataclasses.replace(span, attributes={TAG: "failed"})
        return span if attributes is span.attributes else dataclasses.replace(span, attributes=attributes)

    def scrub(self, record: TraceRecord, *, request: bool = True) -> TraceRecord:
        """A redacted copy of `record` (or `record` itself when nothing matched); never raises."""
        try:
            return self._scrub(record, request)
        except Exception:  # a bug here must not store what it was meant to hide
            log.exception("redacting trace %s failed; its payloads are withheld", record.id)
            tags = {**record.tags, TAG: "failed"}
            return dataclasses.replace(
                record, request=None, response=None, attempt_log=None, error_message=None, tags=tags
            )

    def _scrub(self, record: TraceRecord, request: bool) -> TraceRecord:
        policy = self.policy(record.tenant)
        content = _CONTENT if request else _CONTENT[1:]
        # One look at all the record's text decides which rules can fire at all: usually none.
        strings: list[str] = []
        for name in (*content, *_ATTRIBUTION):
            _strings(getattr(record, name), strings)
        _strings(record.tags, strings)
        joined = "\x00".join(strings)  # no pattern matches NUL: no match spans two strings
        lowered = joined.lower()
        full = [c for c in policy.full if c.may_match(joined, lowered)]
        if not full:
            return record
        credentials = [c for c in policy.credentials if c in full]
        p = _Pass()
        changes: dict[str, Any] = {}
        for names, rules in ((content, full), (_ATTRIBUTION, credentials)):
            for name in names:
                value = getattr(record, name)
                new = p.walk(rules, value) if rules else value
                if new is not value:
                    changes[name] = new
        tags = p.walk(full, record.tags)
        if not p.found:
            return record
        changes["tags"] = {**tags, TAG: ",".join(sorted(p.found))}
        return dataclasses.replace(record, **changes)


def _always(secrets: Iterable[str]) -> list[Rule]:
    """Rules every policy applies: Keel's virtual keys by shape, and the known secrets exactly."""
    exact = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)
    return [VIRTUAL_KEY, *(Rule("api_key", re.escape(s), triggers=(s,)) for s in exact)]


class Credentials:
    """Redacts credentials in free text: the known secrets, virtual keys, and what the `api_keys` and
    `secrets` detectors find (bearer tokens included), whatever the tenant policies enable. For text
    Keel did not write, like an upstream's error message that echoes the request's headers."""

    def __init__(self, secrets: Iterable[str] = (), *, always: list[Rule] | None = None) -> None:
        rules = always if always is not None else _always(secrets)
        self._rules = Policy(_CREDENTIALS, (), rules).credentials

    def __call__(self, text: str) -> str:
        lowered = text.lower()
        rules = [c for c in self._rules if c.may_match(text, lowered)]
        return _Pass().text(rules, text) if rules else text


def known_secrets(config: Config, env: Mapping[str, str] = os.environ) -> list[str]:
    """Credentials from keel.yaml (and provider keys it leaves to the environment) that must never be
    stored or shown, whatever the detectors say."""
    found = [p.api_key for p in config.providers.values() if p.api_key]
    for p in config.providers.values():
        key_env = CATALOG[p.type].key_env if p.type in CATALOG else None
        if not p.api_key and key_env and env.get(key_env):
            found.append(env[key_env])
    found += [v for p in config.providers.values() for v in p.headers.values()]
    found += [s for p in config.providers.values() for s in (p.aws_secret_access_key, p.aws_session_token) if s]
    if any(p.type == "bedrock" for p in config.providers.values()):  # SigV4 keys left to the environment
        found += [env[k] for k in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN") if env.get(k)]
    found += [s for s in (config.admin_token, config.otel.secret_key, config.otel.api_key) if s]
    found += [v for v in config.otel.headers.values()]
    found += [p.client_secret for p in config.sso.providers.values() if p.client_secret]
    found += [config.sso.session_secret] if config.sso.session_secret else []
    return found
