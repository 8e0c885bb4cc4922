"""Changes no admin call makes, as audit entries: the config a process starts with, retention sweeps,
alert rules' state changes (the last two through the `AuditTrail` port, from traces and alerts).

Config: Keel reads keel.yaml at start (there is no live reload), so a changed config shows up as a start
with a different file. `record_config` compares the config with the one the last start recorded (kept
as the audit mark "config") and appends `config.load` the first time, `config.change` when any key
differs, nothing when none does. An entry names the changed keys with their values as shown (values
under secret-looking keys and every header become "[redacted]", URLs keep only scheme and host, since a
webhook's path or query is often its credential); a secret that changed is seen through its sha256,
which stays in the mark table, never in the entry.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

import orjson

from keel.audit.log import REDACTED, SECRET_KEYS, AuditLog
from keel.config import Config
from keel.store.protocols.audit import AuditStore

log = logging.getLogger("keel.audit")
MARK = "config"
ACTOR = "system"
MAX_KEYS = 200  # changed keys named in one entry; the count is always exact
_URL = re.compile(r"^([a-z][a-z0-9+.-]*://)(?:[^@/?#]*@)?([^/?#]*)(.*)$", re.I)


def _secret(key: str) -> bool:
    return bool(SECRET_KEYS.search(key)) and not key.endswith("tokens")  # max_tokens is a count


def _shown(value: Any, secret: bool) -> Any:
    if secret:
        return REDACTED
    if isinstance(value, str):
        m = _URL.match(value)
        return value if m is None else m.group(1) + m.group(2) + ("/…" if m.group(3) else "")
    if isinstance(value, dict):
        return {k: _shown(v, _secret(str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_shown(v, False) for v in value]
    return value


def flatten(cfg: Config) -> dict[str, tuple[Any, str]]:
    """Every leaf key path -> (its value as an audit entry may show it, a sha256 of the real value).
    Lists are leaves (a model's targets, a rule list): shown whole, redacted inside."""
    out: dict[str, tuple[Any, str]] = {}

    def walk(value: Any, path: str, secret: bool) -> None:
        if isinstance(value, dict) and value and not path.endswith("headers"):
            for k, v in value.items():
                walk(v, f"{path}.{k}" if path else str(k), secret or _secret(str(k)))
            return
        secret = secret or path.endswith("headers")
        digest = hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()
        out[path] = (_shown(value, secret), digest)

    walk(cfg.model_dump(mode="json"), "", False)
    return out


def diff(before: dict[str, Any], after: dict[str, tuple[Any, str]]) -> list[dict[str, Any]]:
    """Changed, added and removed paths with their shown values (None: absent). A list of {key, before,
    after}: key paths as values, so the log's own redaction (by key name) leaves counts like max_tokens."""
    changed: list[dict[str, Any]] = []
    for path in sorted(before.keys() | after.keys()):
        old, new = before.get(path), after.get(path)
        if old is None or new is None or old[1] != new[1]:
            changed.append(
                {"key": path, "before": None if old is None else old[0], "after": None if new is None else new[0]}
            )
    return changed


def record_config(audit: AuditLog, store: AuditStore, cfg: Config, now: float) -> str | None:
    """Append `config.load` or `config.change` if the config differs from the last recorded; the action
    appended, or None. A store that fails is logged: it never stops a start."""
    try:
        current = flatten(cfg)
        text = store.audit_mark(MARK)
        digest = hashlib.sha256(orjson.dumps(sorted((k, v[1]) for k, v in current.items()))).hexdigest()
        if text is None:
            audit.append(ACTOR, "config.load", "config", result={"keys": len(current), "digest": digest}, now=now)
            action = "config.load"
        else:
            before = {k: tuple(v) for k, v in orjson.loads(text).items()}
            changed = diff(before, current)
            if not changed:
                return None
            result = {"changed": len(changed), "digest": digest}
            audit.append(ACTOR, "config.change", "config", after=changed[:MAX_KEYS], result=result, now=now)
            action = "config.change"
        store.set_audit_mark(MARK, orjson.dumps({k: list(v) for k, v in current.items()}).decode(), now)
        return action
    except Exception:
        log.exception("could not record the config in the audit log")
        return None


class Trail:
    """The `AuditTrail` port over the audit log (system changes: no source IP)."""

    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    def __call__(self, actor: str, action: str, target: str | None, *, tenant: str | None, result: Any) -> None:
        self._audit.append(actor, action, target, tenant=tenant, result=result)
