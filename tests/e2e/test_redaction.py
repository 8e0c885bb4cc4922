"""Redaction: each detector on true and false positives, per-tenant policies, and end to end — the
SQLite file, the spill files and the exported spans never hold a key or a redacted value."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import openai
import pytest

from keel import config as keel_config
from keel.config import RedactionConfig
from keel.errors import ConfigError
from keel.keys.auth import issue_key
from keel.store.open import open_store
from keel.store.protocols import TraceQuery
from keel.testing import FakeUpstream, Script
from keel.traces.redaction import Redactor, entropy, luhn
from keel.traces.writer import TraceWriter
from keel.types import TraceRecord
from tests.conftest import Gateway, base_config
from tests.e2e import test_otel
from tests.e2e.test_otel import Receiver, attrs
from tests.unit.test_trace_writer import FlakyStore

receiver = test_otel.receiver  # the real OTLP receiver, as a fixture of this module too

ALL = RedactionConfig(detectors=["api_keys", "secrets", "emails", "phones", "cards"])
PROVIDER_KEYS = ("sk-upstream-SECRET-openai", "sk-ant-SECRET-anthropic")


def redact(text: str, cfg: RedactionConfig = ALL, tenant: str | None = None) -> str:
    return str(Redactor(cfg).redact(tenant, text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("key sk-proj-abcDEF1234567890abcdEFGH ok", "key [REDACTED:api_key] ok"),
        ("sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz012345-xyz_AbCdEfGhIjKlMnOp", "[REDACTED:api_key]"),
        ("aws AKIAIOSFODNN7EXAMPLE.", "aws [REDACTED:api_key]."),
        ("ghp_" + "a1B2" * 9, "[REDACTED:api_key]"),
        ("slack xoxb-123456789012-abcdefABCDEF", "slack [REDACTED:api_key]"),
        ("Authorization: Bearer abcdefghijklmnopqrstuvwxyz123", "Authorization: Bearer [REDACTED:api_key]"),
        ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "[REDACTED:api_key]"),
        ("api_key=Zx8kQ2mN7pL4vR9tY3wB", "api_key=[REDACTED:secret]"),
        ('"client_secret": "Zx8kQ2mN7pL4vR9tY3wB=="', '"client_secret": "[REDACTED:secret]"'),
        ("mail bob.smith+x@example.co.uk now", "mail [REDACTED:email] now"),
        ("card 4111 1111 1111 1111, amex 3782-822463-10005", "card [REDACTED:card], amex [REDACTED:card]"),
        ("call +44 20 7946 0958 or (555) 123-4567", "call [REDACTED:phone] or [REDACTED:phone]"),
    ],
)
def test_detectors_find(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "sk-learn-is-a-python-library-name",  # sk- words are not keys
        "the bearer of bad news",
        "password: correcthorsebatterystaple",  # no digits: not a generated secret
        "token: aaaaaaaaaaaaaaaa1",  # low entropy
        "the secret: 2024-01-01T00:00:00Z is when",
        "user@localhost and @decorator",
        "card-like 4111 1111 1111 1112 fails Luhn",
        "order 1234567890123456 is not a card (prefix 1)",
        "on 2024-01-15 at 10.0.0.1, version 1.2.3, ts 1700000000123",
        "uuid 123e4567-e89b-12d3-a456-426614174000",
        "sha 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    ],
)
def test_detectors_leave_alone(text: str) -> None:
    assert redact(text) == text


def test_luhn_and_entropy() -> None:
    assert luhn("4111111111111111") and luhn("378282246310005") and not luhn("4111111111111112")
    assert entropy("aaaa") == 0 and entropy("abcd") == 2.0


def test_only_enabled_detectors_run_but_keel_and_provider_keys_always_do() -> None:
    vkey = "sk-keel-" + "Ab9_-x" * 7
    r = Redactor(RedactionConfig(detectors=[]), secrets=["my-provider-key-123"])
    text = f"a@b.com {vkey} my-provider-key-123 4111 1111 1111 1111"
    assert r.redact(None, text) == "a@b.com [REDACTED:api_key] [REDACTED:api_key] 4111 1111 1111 1111"


def test_per_tenant_policies_and_custom_detectors() -> None:
    cfg = keel_config.parse(
        {
            "redaction": {
                "detectors": ["api_keys"],
                "custom": [{"name": "ticket", "pattern": "TCK-[0-9]{6}"}],
                "tenants": {"acme": {"detectors": ["emails"]}, "beta": {"custom": []}},
            }
        },
        {},
    ).redaction
    r = Redactor(cfg)
    text = "TCK-123456 from a@b.co with sk-proj-abcDEF1234567890abcdEFGH"
    assert r.redact("other", text) == "[REDACTED:ticket] from a@b.co with [REDACTED:api_key]"
    assert r.redact("acme", text) == "[REDACTED:ticket] from [REDACTED:email] with sk-proj-abcDEF1234567890abcdEFGH"
    assert r.redact("beta", text) == "TCK-123456 from a@b.co with [REDACTED:api_key]"


@pytest.mark.parametrize(
    ("custom", "message"),
    [
        ({"name": "x", "pattern": "("}, "not a valid regular expression"),
        ({"name": "x", "pattern": "(?P<n>a)"}, "named groups are not allowed"),
        ({"name": "x", "pattern": "a*"}, "matches the empty string"),
        ({"name": "Bad Name", "pattern": "a"}, "redaction.custom[0].name"),
    ],
)
def test_bad_custom_detectors_are_config_errors(custom: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        keel_config.parse({"redaction": {"custom": [custom]}}, {})
    assert message in str(info.value.message)


def test_scrub_copies_tags_and_keeps_clean_records_as_they_are() -> None:
    r = Redactor(ALL)
    clean = TraceRecord("t1", 0.0, tenant="t", request={"messages": [{"role": "user", "content": "hi"}]})
    assert r.scrub(clean) is clean
    dirty = TraceRecord(
        "t2",
        0.0,
        tenant="t",
        user="bob@example.com",  # attribution: only credentials are redacted there
        feature="sk-proj-abcDEF1234567890abcdEFGH",
        request={"messages": [{"role": "user", "content": "mail bob@example.com"}], "temperature": 0.5},
        response={"content": "call +1 415 555 2671", "tool_calls": []},
        error_message="bad key sk-proj-abcDEF1234567890abcdEFGH",
        tags={"note": "card 4111111111111111"},
    )
    out = r.scrub(dirty)
    assert out is not dirty and dirty.request is not None
    assert dirty.request["messages"][0]["content"] == "mail bob@example.com"  # the original is not mutated
    assert out.request == {"messages": [{"role": "user", "content": "mail [REDACTED:email]"}], "temperature": 0.5}
    assert out.response == {"content": "call [REDACTED:phone]", "tool_calls": []}
    assert out.error_message == "bad key [REDACTED:api_key]"
    assert (out.user, out.feature) == ("bob@example.com", "[REDACTED:api_key]")
    assert out.tags == {"note": "card [REDACTED:card]", "keel.redacted": "api_key,card,email,phone"}


def _grep(paths: list[Path], secrets: list[str]) -> list[tuple[str, str]]:
    found = []
    for p in paths:
        data = p.read_bytes()
        found += [(p.name, s) for s in secrets if s.encode() in data]
    return found


def test_spill_files_and_database_never_hold_keys(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/k.db")
    store.create_tenant("t")
    vkey = issue_key(store, "t").key
    secrets = [vkey, *PROVIDER_KEYS]
    redactor = Redactor(RedactionConfig(detectors=[]), secrets=PROVIDER_KEYS)
    records = [
        TraceRecord(
            f"r{i}",
            time.time(),
            tenant="t",
            request={"messages": [{"role": "user", "content": f"my keys: {' '.join(secrets)}"}]},
            error_message=f"upstream said: {secrets[i % 3]}",
            tags={"leak": secrets[(i + 1) % 3]},
        )
        for i in range(6)
    ]
    down = FlakyStore(store)
    down.down.set()  # every write fails: the batch is spilled
    spill = tmp_path / "spill"
    writer = TraceWriter(down, spill_dir=spill, flush_interval=0.01, scrub=redactor.scrub)  # type: ignore[arg-type]
    writer.start()
    for r in records:
        writer.put(r)
    writer.close()
    assert writer.stats.spilled == 6
    files = list(spill.glob("*.jsonl"))
    assert files and not _grep(files, secrets)
    assert b"[REDACTED:api_key]" in files[0].read_bytes()
    writer = TraceWriter(store, spill_dir=spill, flush_interval=0.01, scrub=redactor.scrub)
    writer.start()
    writer.close()
    assert writer.stats.reloaded == 6
    assert len(store.list_traces(TraceQuery(since=0, until=time.time() + 1))) == 6
    store.close()
    assert not _grep([p for p in tmp_path.glob("k.db*") if p.is_file()], secrets)


def test_keys_in_text_headers_and_errors_never_reach_the_database(
    make_gateway: Any, up: FakeUpstream, tmp_path: Path
) -> None:
    gw: Gateway = make_gateway(base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path))
    secrets = [gw.key, *PROVIDER_KEYS]
    leak = " ".join(secrets)
    up.script(
        Script(text=f"echo: {leak}"),
        Script(status=400, error_body={"error": {"message": f"bad request near {leak}"}}),
    )
    headers = {"x-keel-tags": f"leak={gw.key}", "x-keel-user": PROVIDER_KEYS[0], "x-keel-feature": gw.key}
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0, default_headers=headers) as c:
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": leak}])
        with pytest.raises(openai.BadRequestError):
            c.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], metadata={"k": gw.key}
            )
    rows = gw.traces()
    assert len(rows) == 2 and all(r.tags.get("keel.redacted") == "api_key" for r in rows)
    assert any("[REDACTED:api_key]" in (r.error_message or "") for r in rows)
    files = [p for p in tmp_path.glob("keel.db*") if p.is_file()] + list((tmp_path / "spill").glob("*"))
    assert not _grep(files, secrets)


def test_exported_spans_and_stored_traces_are_redacted(
    make_gateway: Any, up: FakeUpstream, tmp_path: Path, receiver: Receiver
) -> None:
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw["otel"] = {"flush_interval_ms": 20, "endpoint": receiver.url, "capture_content": True}
    raw["redaction"] = {"detectors": ["api_keys", "emails", "cards"]}
    gw: Gateway = make_gateway(raw)
    up.script(Script(text="Card 4111 1111 1111 1111 is on file for ann@example.com."))
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0) as c:
        c.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"I am ann@example.com, key {gw.key}"}]
        )
    [span] = receiver.wait_for(1)
    a = attrs(span)
    assert "I am [REDACTED:email], key [REDACTED:api_key]" in a["gen_ai.input.messages"]
    assert "Card [REDACTED:card] is on file for [REDACTED:email]." in a["gen_ai.output.messages"]
    assert "ann@example.com" not in str(list(span.attributes)) and gw.key not in str(list(span.attributes))
    [row] = gw.traces()
    assert row.request["messages"][0]["content"] == "I am [REDACTED:email], key [REDACTED:api_key]"
    assert row.response["content"] == "Card [REDACTED:card] is on file for [REDACTED:email]."
    assert row.tags["keel.redacted"] == "api_key,card,email"
