"""The PromptStore contract over every SQL backend (SQLite and PostgreSQL): versions read back whole,
numbered per (tenant, prompt), content-addressed (also under concurrent pushes of the same and of other
content), listed incrementally; labels move, keep or change protection, hold rollouts, and refuse a
version the prompt lacks."""

from __future__ import annotations

import threading
import time

from keel.prompts.content import content_hash
from keel.store.protocols import Feedback, FeedbackRow, PromptContent, PromptVersion, Store

NOW = time.time()


def content(text: str, **kw: object) -> PromptContent:
    return PromptContent(({"role": "user", "content": text},), **kw)  # type: ignore[arg-type]


def push(store: Store, name: str, c: PromptContent, tenant: str = "t1", now: float = NOW) -> tuple[PromptVersion, bool]:
    return store.push_prompt(tenant, name, c, content_hash(c), message="m", author="a", now=now)


def test_versions_read_back_whole_numbered_per_prompt_and_tenant(store: Store) -> None:
    rich = PromptContent(
        ({"role": "system", "content": "héllo {{x}}"}, {"role": "user", "content": [{"type": "text", "text": "t"}]}),
        {"type": "object", "properties": {"x": {"type": "string"}}},
        "gpt-4o-mini",
        {"temperature": 0.5, "seed": 3},
        ({"type": "function", "function": {"name": "f", "parameters": {}}},),
        {"type": "json_object"},
    )
    v1, new = push(store, "p", rich)
    assert (v1.version, new, v1.content, v1.message, v1.author, v1.created_at) == (1, True, rich, "m", "a", NOW)
    assert push(store, "p", content("two"))[0].version == 2
    assert push(store, "q", content("two"))[0].version == 1  # per prompt
    assert push(store, "p", content("two"), tenant="t2")[0].version == 1  # per tenant
    assert store.get_prompt_version("t1", "p", 1) == v1
    assert store.get_prompt_version("t1", "p", 3) is None
    assert store.get_prompt_version("t2", "q", 1) is None
    assert [(v.tenant, v.name, v.version) for v in store.list_prompt_versions()] == [
        ("t1", "p", 1), ("t1", "p", 2), ("t1", "q", 1), ("t2", "p", 1)
    ]  # fmt: skip
    assert [v.version for v in store.list_prompt_versions("t1", "p")] == [1, 2]
    push(store, "late", content("late"), now=NOW + 100)
    assert [v.name for v in store.list_prompt_versions(since=NOW + 50)] == ["late"]


def test_identical_content_is_the_same_version(store: Store) -> None:
    first, _ = push(store, "p", content("same"))
    again, new = store.push_prompt("t1", "p", content("same"), first.hash, message="other", author="b", now=NOW + 1)
    assert (again, new) == (first, False)


def test_concurrent_pushes_agree_on_one_version_per_content(store: Store) -> None:
    results: list[tuple[PromptVersion, bool]] = []
    lock = threading.Lock()

    def pusher(i: int) -> None:
        for text in ("shared", f"own-{i}"):
            got = push(store, "p", content(text))
            with lock:
                results.append(got)

    threads = [threading.Thread(target=pusher, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    shared = {v.version for v, _ in results if v.content == content("shared")}
    assert len(shared) == 1 and sum(new for v, new in results if v.content == content("shared")) == 1
    numbers = sorted(v.version for v in store.list_prompt_versions("t1", "p"))
    assert numbers == list(range(1, 8))  # 1 shared + 6 own, no gaps, no duplicates


def test_labels_move_keep_protection_hold_rollouts_and_need_their_versions(store: Store) -> None:
    push(store, "p", content("one"))
    push(store, "p", content("two"))
    made = store.set_prompt_label("t1", "p", "production", 1, protected=True, by="admin", now=NOW)
    assert made is not None and (made.version, made.protected, made.rollout) == (1, True, ())
    moved = store.set_prompt_label("t1", "p", "production", 2, protected=None, by="x", now=NOW + 1)
    assert moved is not None and (moved.version, moved.protected, moved.updated_by) == (2, True, "x")
    rolled = store.set_prompt_label(
        "t1", "p", "production", 1, protected=False, by="x", now=NOW + 2, rollout=((2, 12.5),)
    )
    assert rolled is not None and (rolled.protected, rolled.rollout) == (False, ((2, 12.5),))
    assert store.set_prompt_label("t1", "p", "production", 3, protected=None, by="x", now=NOW) is None
    assert (
        store.set_prompt_label("t1", "p", "production", 1, protected=None, by="x", now=NOW, rollout=((9, 5.0),)) is None
    )
    assert store.set_prompt_label("t1", "nope", "production", 1, protected=None, by="x", now=NOW) is None
    store.set_prompt_label("t1", "p", "staging", 2, protected=None, by=None, now=NOW)
    labels = store.list_prompt_labels("t1", "p")
    assert [(lb.label, lb.version, lb.rollout) for lb in labels] == [
        ("production", 1, ((2, 12.5),)),
        ("staging", 2, ()),
    ]
    assert store.list_prompt_labels("t2") == []


def test_deleting_a_tenant_deletes_its_prompts_only(store: Store) -> None:
    for tenant in ("gone", "kept"):
        store.create_tenant(tenant)
        push(store, "p", content("x"), tenant=tenant)
        store.set_prompt_label(tenant, "p", "production", 1, protected=None, by=None, now=NOW)
        store.put_feedback(Feedback(f"trace-{tenant}", "", tenant, 1.0, "ok", "p@1", "m", NOW))
    kinds = ("prompt_feedback", "prompts")
    erased = [store.erase_subject(kind, "gone", None, 100, lambda keys: None) for kind in kinds]
    assert erased == [1, 3]  # one feedback score; one version, one label, its history entry (the purge's path)
    assert [v.tenant for v in store.list_prompt_versions()] == ["kept"]
    assert [lb.tenant for lb in store.list_prompt_labels()] == ["kept"]
    assert store.prompt_label_history("gone", "p") == [] and len(store.prompt_label_history("kept", "p")) == 1
    assert store.feedback_summary(None, NOW - 1, NOW + 1, "prompt_version") == [FeedbackRow("p@1", 1, 1.0)]


def test_a_rollout_moves_the_label_once_per_transition_and_every_move_is_in_the_history(store: Store) -> None:
    import dataclasses

    from keel.store.protocols import PromptRollout, RolloutPlan

    push(store, "r", content("one"))
    push(store, "r", content("two"))
    store.set_prompt_label("t1", "r", "production", 1, protected=None, by="admin", now=NOW)
    plan = RolloutPlan(("error_rate<0.02",), (50.0,), 60.0, 120.0, 5)
    started = PromptRollout("t1", "r", "production", 1, 2, 10.0, plan, "running", NOW, "admin", NOW, None, NOW, None)
    assert store.start_prompt_rollout(dataclasses.replace(started, version=9)) is None  # a missing version
    moved = store.start_prompt_rollout(started)
    assert moved is not None and (moved.version, moved.rollout) == (1, ((2, 10.0),))
    (read,) = store.list_prompt_rollouts("t1", "r", running=True)
    assert (read.plan, read.state, read.rev) == (plan, "running", 0)

    up = dataclasses.replace(read, weight=50.0, stepped_at=NOW + 1, updated_at=NOW + 1, reason="held")
    assert store.advance_prompt_rollout(up, label=(1, ((2, 50.0),)), actor="guard")
    assert not store.advance_prompt_rollout(up, label=(1, ()), actor="guard")  # a stale rev: another got there first
    (read,) = store.list_prompt_rollouts("t1", "r")
    assert (read.weight, read.rev) == (50.0, 1)
    assert store.list_prompt_labels("t1", "r")[0].rollout == ((2, 50.0),)

    back = store.set_prompt_label("t1", "r", "production", 1, protected=None, by="ops", now=NOW + 2, reason="by hand")
    assert back is not None and back.rollout == ()
    (read,) = store.list_prompt_rollouts("t1", "r")
    assert (read.state, read.reason) == ("rolled_back", "by hand")  # a hand that moves the label ends the rollout
    assert store.list_prompt_rollouts(running=True) == []
    history = store.prompt_label_history("t1", "r")
    assert [(m.version, m.rollout, m.actor) for m in history] == [
        (1, (), "ops"), (1, ((2, 50.0),), "guard"), (1, ((2, 10.0),), "admin"), (1, (), "admin")
    ]  # fmt: skip
    assert store.prompt_label_history("t1", "r", "staging") == []


def test_a_prompt_is_claimed_once_and_given_to_a_team_or_the_tenant(store: Store) -> None:
    assert store.claim_prompt("t1", "p", "ml") == "ml"
    assert store.claim_prompt("t1", "p", "web") == "ml"  # the first claim holds
    assert store.claim_prompt("t1", "q", None) is None
    assert store.claim_prompt("t1", "q", "web") is None  # tenant-wide is a claim too
    assert store.claim_prompt("t2", "p", "web") == "web"  # per tenant
    store.set_prompt_team("t1", "q", "web")
    store.set_prompt_team("t1", "p", None)
    store.set_prompt_team("t1", "new", "ml")
    assert store.prompt_teams("t1") == {("t1", "p"): None, ("t1", "q"): "web", ("t1", "new"): "ml"}
    assert store.prompt_teams() == {("t1", "p"): None, ("t1", "q"): "web", ("t1", "new"): "ml", ("t2", "p"): "web"}
    assert store.prompt_teams("t1", "p") == {("t1", "p"): None}  # one prompt's, tenant-wide
    assert store.prompt_teams("t2", "p") == {("t2", "p"): "web"}
    assert store.prompt_teams("t1", "unclaimed") == {}
