"""Redaction: secrets and personal data become `[REDACTED:kind]` before a trace is stored or exported.

Each policy (the default, and each tenant's override) compiles its detectors into one alternation,
so a string is scanned once whatever the number of detectors; validators run only on candidate
matches (Luhn and card prefixes, phone digit counts, entropy of key=value secrets). Keel's virtual
keys (by shape) and the configured provider keys and admin token (exactly) are redacted under every
policy, even one with no detector. Attribution fields (user, feature, session, prompt version) get
only the credential detectors: they are identifiers people choose, and usage rollups group by them.

`Redactor.scrub` never mutates the record it is given (the writer and exporter threads read the same
one): it returns a redacted copy tagged `keel.redacted=<kinds>`, or the record itself when nothing
matched. If redaction itself fails, the payload fields are withheld rather than stored as they are.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from keel.config import Config, CustomDetectorConfig, Detector, RedactionConfig
from keel.types import TraceRecord

log = logging.getLogger("keel.redaction")

TAG = "keel.redacted"  # on a redacted record: the kinds that were replaced, comma-separated
PLACEHOLDER = "[REDACTED:{}]"
_CREDENTIALS: frozenset[str] = frozenset({"api_keys", "secrets"})

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
    kind: str  # the placeholder's kind
    pattern: str  # no named groups: the combined pattern names each rule's group
    replace: Replace = _whole


# The built-in detectors. Order matters where patterns overlap: earlier rules win at a position.
DETECTORS: dict[str, tuple[Rule, ...]] = {
    "api_keys": (
        Rule("api_key", r"\bsk-(?:[A-Za-z0-9]+[_-])*[A-Za-z0-9]{16,}"),  # OpenAI, Anthropic (sk-ant-…), DeepSeek
        Rule("api_key", r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{16,}"),  # Stripe
        Rule("api_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key ids
        Rule("api_key", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),  # GitHub
        Rule("api_key", r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),  # Slack
        Rule("api_key", r"\bAIza[0-9A-Za-z_-]{35}"),  # Google
        Rule("api_key", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),  # JWT
        Rule("api_key", r"\b[Bb]earer\s+[A-Za-z0-9._~+/-]{16,}=*", _bearer),
    ),
    "secrets": (
        Rule(
            "secret",
            r"(?i:\b(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?key|(?:access|auth|refresh)[_-]?token|token"
            r"|password|passwd|pwd|client[_-]?secret|private[_-]?key)\b[\"']?\s*[:=]\s*[\"']?)"
            r"[A-Za-z0-9_\-./+=]{16,}",
            _secret,
        ),
    ),
    "emails": (Rule("email", r"\b[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b"),),
    "cards": (Rule("card", r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])", _card),),
    "phones": (
        Rule("phone", r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,6}(?!\d)", _phone),
        Rule("phone", r"(?<![\w(])\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?!\d)", _phone),
    ),
}
VIRTUAL_KEY = Rule("api_key", r"\bsk-keel-[A-Za-z0-9_-]{20,}")


class Policy:
    """One set of detectors, compiled: `full` for content, `credentials` for attribution fields."""

    def __init__(self, detectors: Iterable[Detector], custom: Iterable[CustomDetectorConfig], always: list[Rule]):
        enabled = list(dict.fromkeys(detectors))
        rules = [*always, *(r for d in enabled for r in DETECTORS[d])]
        rules += [Rule(c.name, c.pattern) for c in custom]
        credentials = [*always, *(r for d in enabled if d in _CREDENTIALS for r in DETECTORS[d])]
        self.full = _Compiled(rules)
        self.credentials = _Compiled(credentials)


class _Compiled:
    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules
        self.pattern = re.compile("|".join(f"(?P<r{i}>{r.pattern})" for i, r in enumerate(rules)))


class _Pass:
    """One record's redaction: substitutes, and remembers which kinds it replaced."""

    def __init__(self) -> None:
        self.found: set[str] = set()

    def text(self, c: _Compiled, text: str) -> str:
        if c.pattern.search(text) is None:
            return text

        def sub(m: re.Match[str]) -> str:
            rule = c.rules[int((m.lastgroup or "r0")[1:])]  # the rule's group closes last: it is lastgroup
            out = rule.replace(m.group(), rule.kind)
            if out is None:
                return m.group()
            self.found.add(rule.kind)
            return out

        out = c.pattern.sub(sub, text)
        return text if out == text else out

    def walk(self, c: _Compiled, value: Any) -> Any:
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
        exact = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)
        always = [VIRTUAL_KEY, *(Rule("api_key", re.escape(s)) for s in exact)]
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
        p = _Pass()
        changes: dict[str, Any] = {}
        for name in _CONTENT if request else _CONTENT[1:]:
            value = getattr(record, name)
            new = p.walk(policy.full, value)
            if new is not value:
                changes[name] = new
        tags = p.walk(policy.full, record.tags)
        for name in _ATTRIBUTION:
            value = getattr(record, name)
            new = p.walk(policy.credentials, value)
            if new is not value:
                changes[name] = new
        if not p.found:
            return record
        changes["tags"] = {**tags, TAG: ",".join(sorted(p.found))}
        return dataclasses.replace(record, **changes)


def known_secrets(config: Config) -> list[str]:
    """Credentials from keel.yaml that must never be stored, whatever the detectors say."""
    found = [p.api_key for p in config.providers.values() if p.api_key]
    found += [v for p in config.providers.values() for v in p.headers.values()]
    found += [s for s in (config.admin_token, config.otel.secret_key, config.otel.api_key) if s]
    found += [v for v in config.otel.headers.values()]
    return found
