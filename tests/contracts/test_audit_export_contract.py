"""Audit queries and range exports over every SQL backend: the filters (actor, action prefix, target,
tenant, time) and the seq cursor; the named marks; a range export that verifies alone, anchored on the
entry before it, and names a file that was edited, thinned, reordered or cut."""

from __future__ import annotations

import io

import orjson
import pytest

from keel.audit.export import AuditQuery, read_csv, read_jsonl, verify_file
from keel.audit.export import export as export_range
from keel.audit.log import AuditLog
from keel.store.protocols import Store

DAY = 86_400.0
T0 = 1_780_000_000.0  # a fixed day start: entries get explicit times


def fill(log: AuditLog) -> None:
    """Two entries the day before, eight during the day (two tenants, two actors), one the day after."""
    log.append("admin", "keys.create", "k-old", tenant="acme", now=T0 - 100)
    log.append("admin", "keys.create", "k-old2", tenant="acme", now=T0 - 50)
    for i in range(8):
        actor = "admin" if i % 2 else "user:u1"
        action = ["prompt.label.move", "prompt.create", "tool.register", "key%_x"][i % 4]
        log.append(actor, action, f"t{i % 3}", tenant="acme" if i < 5 else "zeta", arguments={"i": i}, now=T0 + i * 60)
    log.append("admin", "keys.revoke", "k-next", tenant="acme", now=T0 + DAY + 5)


def seqs(store: Store, **kw: object) -> list[int]:
    return [e.seq for e in AuditQuery(**kw).page(store, 0, 100)]  # type: ignore[arg-type]


def test_filters_and_cursor(store: Store) -> None:
    fill(AuditLog(store))
    assert seqs(store, since=T0, until=T0 + DAY) == list(range(3, 11))
    assert seqs(store, actor="user:u1", since=T0) == [3, 5, 7, 9]
    assert seqs(store, action="prompt.") == [3, 4, 7, 8]
    assert seqs(store, action="key%") == [6, 10]  # '%' and '_' are themselves, not patterns
    assert seqs(store, action="keys.") == [1, 2, 11]
    assert seqs(store, target="t0") == [3, 6, 9]
    assert seqs(store, tenant="zeta") == [8, 9, 10]
    query = AuditQuery(since=T0 - DAY)
    pages, after = [], 0
    while page := query.page(store, after, 4):
        pages.append([e.seq for e in page])
        after = page[-1].seq
    assert pages == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11]]


def test_query_times_take_iso_unix_and_durations() -> None:
    q = AuditQuery.parse({"since": "2026-06-01T00:00:00Z", "until": "1780086400", "actor": "admin"})
    assert (q.since, q.until, q.actor, q.filtered) == (1_780_272_000.0, 1_780_086_400.0, "admin", True)
    assert AuditQuery.parse({"since": "24h"}, now=T0).since == T0 - DAY
    with pytest.raises(ValueError, match="'until' must be"):
        AuditQuery.parse({"until": "yesterday"})


def test_marks_keep_one_value_per_name(store: Store) -> None:
    assert store.audit_mark("siem") is None
    store.set_audit_mark("siem", "5", 1.0)
    store.set_audit_mark("siem", "9", 2.0)
    store.set_audit_mark("other", "x", 2.0)
    assert (store.audit_mark("siem"), store.audit_mark("other")) == ("9", "x")


def day_export(store: Store, fmt: str = "jsonl", **kw: object) -> bytes:
    return b"".join(export_range(store, AuditQuery(since=T0, until=T0 + DAY, **kw), fmt))  # type: ignore[arg-type]


def test_a_day_export_verifies_alone_and_is_anchored_on_the_entry_before(store: Store) -> None:
    fill(AuditLog(store))
    text = day_export(store)
    lines = text.splitlines()
    assert [orjson.loads(x)["seq"] for x in lines[:-1]] == list(range(3, 11))
    verdict = verify_file(read_jsonl(lines))
    assert verdict.ok, verdict.problems
    assert (verdict.entries, verdict.links, verdict.gaps, verdict.complete) == (8, 7, 0, True)
    before = AuditQuery().page(store, 1, 1)[0]  # entry 2, the last one before the day
    assert verdict.anchor == before.hash
    trailer = orjson.loads(lines[-1])["keel_audit_export"]
    assert (trailer["count"], trailer["first_seq"], trailer["last_seq"]) == (8, 3, 10)


def test_a_filtered_export_verifies_each_entry_and_the_links_it_can(store: Store) -> None:
    fill(AuditLog(store))
    verdict = verify_file(read_jsonl(day_export(store, actor="admin").splitlines()))
    assert verdict.ok, verdict.problems
    assert (verdict.entries, verdict.links, verdict.complete) == (4, 0, False)
    assert verdict.gaps == 3


def test_the_csv_export_verifies_its_entries_and_links(store: Store) -> None:
    fill(AuditLog(store))
    text = day_export(store, "csv").decode()
    assert text.splitlines()[0].startswith("seq,at,at_iso,tenant,actor,action,target")
    verdict = verify_file(read_csv(io.StringIO(text)), csv_form=True)
    assert verdict.ok, verdict.problems
    assert (verdict.entries, verdict.links, verdict.complete) == (8, 7, None)
    edited = text.replace("prompt.create", "prompt.delete", 1)
    assert not verify_file(read_csv(io.StringIO(edited)), csv_form=True).ok


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        ("edit", "entry 4 does not match its hash (edited)"),
        ("edit_detail", "entry 4: 'detail' differs"),
        ("drop_middle", "gap(s) in the numbering of an unfiltered range"),
        ("drop_last", "the trailer says 8 entries"),
        ("cut", "the file is cut short"),
        ("swap", "entry 5 comes after entry 6"),
    ],
)
def test_a_damaged_export_is_named(store: Store, damage: str, named: str) -> None:
    fill(AuditLog(store))
    lines = day_export(store).splitlines()
    rows = [orjson.loads(x) for x in lines]
    if damage == "edit":
        rows[1]["target"] = "elsewhere"
    elif damage == "edit_detail":
        rows[1]["detail"] = {"arguments": {"i": 99}}
    elif damage == "drop_middle":
        del rows[3]
    elif damage == "drop_last":
        del rows[-2]
    elif damage == "cut":
        rows = rows[:5]
    else:
        rows[2], rows[3] = rows[3], rows[2]
    verdict = verify_file(rows)
    assert not verdict.ok
    assert any(named in p for p in verdict.problems), verdict.problems


def test_a_time_range_exports_one_unbroken_piece_even_with_clocks_out_of_order(store: Store) -> None:
    log = AuditLog(store)
    log.append("admin", "a", "x", now=T0 - 10)
    log.append("admin", "b", "x", now=T0 + 10)
    log.append("admin", "c", "x", now=T0 - 1)  # another process's clock, a little behind
    log.append("admin", "d", "x", now=T0 + 20)
    log.append("admin", "e", "x", now=T0 + DAY)
    rows = [orjson.loads(x) for x in day_export(store).splitlines()]
    assert [r["action"] for r in rows[:-1]] == ["b", "c", "d"]
    verdict = verify_file(rows)
    assert verdict.ok and verdict.complete and verdict.gaps == 0, verdict.problems
    assert not [orjson.loads(x) for x in day_export(store, actor="nobody").splitlines()][:-1]
