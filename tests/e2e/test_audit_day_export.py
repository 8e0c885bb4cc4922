"""MUST SHOW (issue 19): an audit export of a day's changes, complete, in order, chain verified.

A day of varied control-plane changes through the admin API and the CLI — tenants, keys, limits, prompts
and their labels, tools, secrets, an approval granted over the API and one denied from the CLI — between
entries of the day before and the day after. The day's range, exported as JSONL and CSV (over the API and
with `keel audit export`), holds every change, once, in the order made, as one unbroken piece of the chain
anchored on the last entry of the day before; `keel audit verify --file` checks the file offline, and
`/api/audit/verify` the whole chain in the database. No secret value or virtual key appears in it.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.audit.export import read_csv, read_jsonl, verify_file
from keel.audit.log import AuditLog
from keel.store.open import open_store
from keel.testing import FakeUpstream, Script

from ..agents.test_runs import MASTER, completion, until
from ..agents.tool_service import tool_service
from ..conftest import Gateway, base_config

DAY = 86_400.0
SECRET = "crm-SECRET-value-7f3a"


def cli(tmp: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`keel ...` as a real process against the gateway's keel.yaml (the same database)."""
    base = {k: v for k, v in os.environ.items() if k != "KEEL_CONFIG"}
    done = subprocess.run([sys.executable, "-m", "keel.cli.main", *args], cwd=tmp, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def iso(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).isoformat().replace("+00:00", "Z")


def day_of(now: float) -> float:
    """Today's UTC midnight; near midnight, wait for the next day (the changes must fit in one day)."""
    while now % DAY > DAY - 180:
        time.sleep(1.0)
        now = time.time()
    return now - now % DAY


def test_a_days_changes_export_complete_in_order_and_verified(
    make_gateway: Any, up: FakeUpstream, storage_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = day_of(time.time())
    s = open_store(storage_url)  # the day before: three changes already in the chain
    try:
        for i, at in enumerate((day - 7200, day - 3600, day - 60)):
            AuditLog(s).append("admin", "key.create", f"k-before-{i}", tenant="t0", now=at)
        before_day = s.audit_head()
    finally:
        s.close()

    monkeypatch.setenv("KEEL_MASTER_KEY", MASTER)
    gw: Gateway = make_gateway(base_config(up, storage_url, tmp_path))
    made: list[tuple[str, str, str | None]] = [("system", "config.load", "config")]  # (actor, action, target)
    admin = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {gw.admin}"}, timeout=30)
    with admin, tool_service() as svc:
        # tenants, keys, limits from the CLI
        cli(tmp_path, "tenants", "create", "acme", "--regions", "us")
        cli(tmp_path, "tenants", "update", "acme", "--any-region")
        key = json.loads(cli(tmp_path, "keys", "create", "--tenant", "acme", "--name", "ci", "--json").stdout)
        cli(tmp_path, "limits", "set", "--tenant", "acme", "--rpm", "100", "--usd-day", "5")
        made += [("cli", "tenant.create", "acme"), ("cli", "tenant.update", "acme"), ("cli", "key.create", key["id"]),
                 ("cli", "limits.set", "tenant:acme")]  # fmt: skip

        # secrets and tools over the API
        r = admin.put("/api/agents/secrets/crm_token", json={"tenant": "t1", "value": SECRET})
        assert r.status_code == 201, r.text
        pay = {
            "tenant": "t1", "name": "pay", "kind": "http", "description": "pay an invoice",
            "parameters": {"type": "object", "properties": {"amount": {"type": "number"}}, "required": ["amount"]},
            "http": {"method": "POST", "url": svc.url + "/pay"},
            "secrets": [{"name": "crm_token", "header": "Authorization", "format": "Bearer {value}"}],
            "policy": {"default": "allow", "rules": [{"when": "amount > 100", "action": "approve"}]},
        }  # fmt: skip
        scratch = {**pay, "name": "scratch", "policy": {"default": "deny"}}
        for spec in (pay, scratch):
            assert admin.post("/api/agents/tools", json=spec).status_code == 201
        assert admin.delete("/api/agents/tools/scratch", params={"tenant": "t1"}).status_code == 200
        made += [("admin", "secret.set", "crm_token"), ("admin", "tool.register", "pay"),
                 ("admin", "tool.register", "scratch"), ("admin", "tool.remove", "scratch")]  # fmt: skip

        # a prompt over the API (with a label), a second version, its label moved from the CLI
        prompt = {"tenant": "t1", "name": "support", "alias": "sim", "label": "production",
                  "messages": [{"role": "system", "content": "Be brief."}]}  # fmt: skip
        assert admin.post("/api/prompts", json=prompt).status_code == 201
        v2 = {**prompt, "messages": [{"role": "system", "content": "Be brief and kind."}]}
        del v2["label"]
        assert admin.post("/api/prompts", json=v2).status_code == 201
        cli(tmp_path, "prompts", "label", "support", "production", "2", "--tenant", "t1")
        made += [
            ("admin", "prompt.label.move", "support:production"),
            ("cli", "prompt.label.move", "support:production"),
        ]

        # two agent runs that need approval: one approved over the API, one denied from the CLI
        up.script(
            Script(body_override=completion(("call_a", "pay", {"amount": 250}))),
            Script(text="Paid."),
            Script(body_override=completion(("call_b", "pay", {"amount": 900}))),
            Script(text="Not paid."),
        )
        keyed = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {gw.key}"}, timeout=30)
        with keyed:
            for decide in ("api", "cli"):  # amounts 250 then 900, as the upstream is scripted
                run = keyed.post("/api/agents/runs", json={"model": "gpt-4o-mini", "input": "pay", "tools": ["pay"]})
                assert run.json()["state"] == "waiting", run.text
                (call_id,) = run.json()["pending"]
                if decide == "api":
                    assert admin.post(f"/api/approvals/{call_id}/approve", json={"by": "alice"}).status_code == 200
                    made.append(("admin:alice", "approval.approved", "pay"))
                else:
                    cli(tmp_path, "approvals", "deny", call_id, "--by", "bob")
                    made.append(("cli:bob", "approval.denied", "pay"))
                rid = run.json()["id"]
                until(lambda rid=rid: admin.get(f"/api/agents/runs/{rid}").json()["state"] in ("done", "failed"))
        assert [p["body"]["amount"] for p in svc.payments] == [250]  # the denied call never ran

        # the end of the day: a tool and a secret removed from the CLI, the key revoked, the limits cleared
        cli(tmp_path, "tools", "remove", "pay", "--tenant", "t1")
        cli(tmp_path, "tools", "secrets", "remove", "crm_token", "--tenant", "t1")
        cli(tmp_path, "keys", "revoke", key["id"])
        cli(tmp_path, "limits", "clear", "--tenant", "acme")
        made += [("cli", "tool.remove", "pay"), ("cli", "secret.delete", "crm_token"), ("cli", "key.revoke", key["id"]),
                 ("cli", "limits.clear", "tenant:acme")]  # fmt: skip

        AuditLog(gw.runtime.store).append("admin", "key.create", "k-next-day", tenant="t0", now=day + DAY + 60)
        since, until_ = iso(day), iso(day + DAY)

        # the day's range over the API: JSONL and CSV, streamed
        jsonl = admin.get("/api/audit/export", params={"since": since, "until": until_, "format": "jsonl"})
        assert jsonl.status_code == 200 and jsonl.headers["content-type"].startswith("application/x-ndjson")
        csv_text = admin.get("/api/audit/export", params={"since": since, "until": until_, "format": "csv"}).text
        chain = admin.get("/api/audit/verify").json()

        # the same day through GET /api/audit: filtered, a page at a time by the seq cursor
        pages, after = [], 0
        while after is not None:
            params = {"since": since, "until": until_, "actor": "cli", "action": "key.", "after": after, "limit": 1}
            page = admin.get("/api/audit", params=params).json()
            pages += [(e["action"], e["target"]) for e in page["data"]]
            after = page["next_after"]
        assert pages == [("key.create", key["id"]), ("key.revoke", key["id"])]
        refused = admin.get("/api/audit", params={"since": "yesterday-ish"})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "since"

    rows = [json.loads(line) for line in jsonl.text.splitlines()]
    entries, trailer = rows[:-1], rows[-1]["keel_audit_export"]
    seqs = [e["seq"] for e in entries]
    assert seqs == list(range(before_day[0] + 1, seqs[-1] + 1)), "every entry of the day, in sequence order"
    assert all(day <= e["at"] < day + DAY for e in entries), "nothing from the day before or after"
    assert entries[0]["prev_hash"] == before_day[1], "anchored on the last entry of the day before"
    assert (trailer["count"], trailer["complete"]) == (len(entries), True)

    # every change made, present once and in the order made (the runs' own entries come in between)
    shown = [(e["actor"], e["action"], e["target"]) for e in entries]
    positions = [shown.index(change) for change in made]
    assert positions == sorted(positions), list(zip(made, positions, strict=True))
    assert all(shown.count(change) == 1 for change in made if change[1] != "tool.register")
    assert {"approval.requested", "secret.use", "tool.run"} <= {e["action"] for e in entries}
    print(f"\n  the day's export: {len(entries)} entries, seq {seqs[0]}-{seqs[-1]}, {len(made)} changes made")

    # offline: the files alone verify; a file with one entry removed does not
    verdict = verify_file(read_jsonl(jsonl.content.splitlines()))
    assert verdict.ok and verdict.links == len(entries) - 1 and verdict.anchor == before_day[1], verdict.problems
    from_csv = verify_file(read_csv(io.StringIO(csv_text)), csv_form=True)
    assert from_csv.ok and from_csv.entries == len(entries) and from_csv.first_seq == seqs[0], from_csv.problems
    assert chain == {"ok": True, "checked": seqs[-1] + 1, "bad_seq": None, "reason": None}

    cli(tmp_path, "audit", "export", "--since", since, "--until", until_, "--format", "jsonl", "-o", "day.jsonl")
    cli(tmp_path, "audit", "export", "--since", since, "--until", until_, "--format", "csv", "-o", "day.csv")
    assert (tmp_path / "day.jsonl").read_bytes() == jsonl.content, "the CLI and the API export the same bytes"
    assert (tmp_path / "day.csv").read_text() == csv_text
    listed = json.loads(
        cli(tmp_path, "audit", "list", "--since", since, "--actor", "cli", "--action", "key.", "--json").stdout
    )
    assert [(e["action"], e["target"]) for e in listed] == [("key.create", key["id"]), ("key.revoke", key["id"])]
    ok = cli(tmp_path, "audit", "verify", "--file", "day.jsonl")
    print(f"  keel audit verify --file day.jsonl: {ok.stdout.strip()}")
    assert f"ok: {len(entries)} entries (seq {seqs[0]} to {seqs[-1]})" in ok.stdout
    lines = (tmp_path / "day.jsonl").read_bytes().splitlines()
    (tmp_path / "thinned.jsonl").write_bytes(b"\n".join(lines[:5] + lines[6:]) + b"\n")
    bad = subprocess.run([sys.executable, "-m", "keel.cli.main", "audit", "verify", "--file", "thinned.jsonl"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 1 and "BAD:" in bad.stdout, bad.stdout

    everything = jsonl.text + csv_text
    assert SECRET not in everything and key["key"] not in everything and gw.key not in everything
