"""Changes no admin call makes are audit entries too: the config a start brings (first load, then only
what changed, with secrets and URL credentials never shown), a retention sweep that deleted something
(with its counts), an alert rule firing or resolving."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest

from keel import config as keel_config
from keel.alerts.builder import audited
from keel.alerts.sender import RuleEvent
from keel.audit.changes import Trail, record_config
from keel.audit.log import AuditLog
from keel.gateway.capability import AuditTrail, Context
from keel.store.protocols import Store
from keel.testing import FakeUpstream
from keel.types import TraceRecord

from ..conftest import base_config


def parsed(raw: dict[str, Any]) -> keel_config.Config:
    return keel_config.parse(raw, env={})


RAW: dict[str, Any] = {
    "admin_token": "adm-SECRET-token-1",
    "storage": {"url": "postgresql://keel:db-SECRET-pw@db.internal:5432/keel"},
    "limits": {"default_output_tokens": 1024, "webhook": {"url": "https://hooks.example/T0/B0/hook-SECRET-path", "secret": "wh-SECRET"}},
    "providers": {"oai": {"type": "openai", "base_url": "https://api.example/v1", "api_key": "sk-SECRET-1",
                          "headers": {"x-custom-auth": "hdr-SECRET"}}, "sim": {"type": "simulated"}},
    "models": {"m": {"targets": [{"provider": "sim", "model": "simulated-1"}]}},
}  # fmt: skip


def test_a_start_records_the_config_then_only_what_changed(store: Store) -> None:
    audit = AuditLog(store)
    assert record_config(audit, store, parsed(RAW), 1.0) == "config.load"
    assert record_config(audit, store, parsed(RAW), 2.0) is None  # the same file again: nothing
    changed = json.loads(json.dumps(RAW))
    changed["providers"]["oai"]["api_key"] = "sk-SECRET-2"  # a rotated key: seen, never shown
    changed["providers"]["oai"]["headers"]["x-custom-auth"] = "hdr-SECRET-2"
    changed["storage"]["url"] = "postgresql://keel:db-SECRET-pw2@db2.internal:5432/keel"
    changed["limits"]["default_output_tokens"] = 2048
    changed["models"]["m2"] = {"targets": [{"provider": "oai", "model": "gpt-4o-mini"}]}
    assert record_config(audit, store, parsed(changed), 3.0) == "config.change"
    entries = list(audit.entries())
    assert [(e.actor, e.action, e.target) for e in entries] == [
        ("system", "config.load", "config"),
        ("system", "config.change", "config"),
    ]
    detail = json.loads(entries[1].detail)
    after = {c["key"]: {"before": c["before"], "after": c["after"]} for c in detail["after"]}
    assert after["providers.oai.api_key"] == {"before": "[redacted]", "after": "[redacted]"}
    assert after["providers.oai.headers"] == {"before": "[redacted]", "after": "[redacted]"}
    assert after["storage.url"] == {
        "before": "postgresql://db.internal:5432/…",
        "after": "postgresql://db2.internal:5432/…",
    }
    assert after["limits.default_output_tokens"] == {"before": 1024, "after": 2048}
    added = after["models.m2.targets"]  # a new alias: each of its keys, from nothing
    assert added["before"] is None and added["after"][0]["model"] == "gpt-4o-mini"
    assert detail["result"]["changed"] == len(after)
    assert not any(k.startswith(("models.m.", "admin_token")) for k in after), "unchanged keys are not named"
    every = "".join(e.detail for e in entries) + (store.audit_mark("config") or "")
    assert "SECRET" not in every, "no secret, credential or webhook path in an entry or the mark"
    assert audit.verify().ok


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)
def test_a_sweep_that_deleted_traces_is_an_entry_with_its_counts(
    make_gateway: Any, up: FakeUpstream, storage_url: str, tmp_path: Path
) -> None:
    raw = base_config(up, storage_url, tmp_path)
    raw["retention"] = {"traces_days": 1, "sweep_every_s": 0.2}
    gw = make_gateway(raw)
    old = TraceRecord(id="old", started_at=time.time() - 3 * 86400, tenant="t1", alias="sim")
    gw.runtime.store.append_traces([dataclasses.replace(old, id=f"old{i}") for i in range(3)])
    deadline = time.monotonic() + 15
    while not (found := gw.runtime.store.list_audit(action="retention.")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert found, "no retention.sweep entry"
    [entry] = found
    assert (entry.actor, entry.action) == ("system:retention", "retention.sweep")
    result = json.loads(entry.detail)["result"]
    assert (result["traces"], result["traces_by_tenant"]) == (3, {"*": 3})
    state = gw.runtime.workers.states["retention"]
    later = state.passes + 3
    while state.passes < later and time.monotonic() < deadline + 15:
        time.sleep(0.05)
    assert state.passes >= later  # three more sweeps: they deleted nothing, so they added no entry
    assert len(gw.runtime.store.list_audit(action="retention.")) == 1


def test_an_alert_state_change_is_an_entry(store: Store) -> None:
    ctx = Context(parsed(RAW), store)
    ctx.add(Trail(AuditLog(store)), as_=AuditTrail)
    sent: list[RuleEvent] = []
    send = audited(sent.append, ctx)
    event = RuleEvent("alert.firing", "spend", "cost_usd", "tenant", "acme", None, 10.0, 12.5, 40, "1h", 100.0, 100.0)
    send(event)
    send(dataclasses.replace(event, event="alert.resolved", observed=3.0, at=200.0))
    assert sent == [event, dataclasses.replace(event, event="alert.resolved", observed=3.0, at=200.0)]
    entries = store.list_audit(action="alert.")
    assert [(e.actor, e.action, e.target) for e in entries] == [
        ("system:alerts", "alert.firing", "spend"),
        ("system:alerts", "alert.resolved", "spend"),
    ]
    assert json.loads(entries[0].detail)["result"]["observed"] == 12.5
