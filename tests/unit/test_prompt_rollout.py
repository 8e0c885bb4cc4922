"""A label in rollout splits calls by a sticky hash: 10,000 simulated users on a 90/10 split land within
±1.5 points of 10%, keep their variant on later calls (and in another process's book), keep it when the
share steps up, and all return to the stable version on rollback."""

from __future__ import annotations

from keel.prompts.book import PromptBook
from keel.prompts.content import content_hash
from keel.store.protocols import PromptContent, PromptLabel, PromptVersion

USERS = [f"user-{i}" for i in range(10_000)]


def version(n: int) -> PromptVersion:
    content = PromptContent(({"role": "user", "content": f"v{n} {{{{q}}}}"},), alias="a")
    return PromptVersion("t1", "support", n, content_hash(content), content, None, None, 0.0)


def book(*rollout: tuple[int, float]) -> PromptBook:
    b = PromptBook()
    b.update([version(7), version(8)], [PromptLabel("t1", "support", "production", 7, False, 0.0, None, rollout)])
    return b


def assignment(b: PromptBook) -> dict[str, int]:
    out = {}
    for user in USERS:
        served, variant = b.resolve("t1", "support", None, "production", user)
        assert variant == ("rollout" if served.version.version == 8 else "stable")
        out[user] = served.version.version
    return out


def test_ninety_ten_lands_within_one_and_a_half_points_and_is_sticky() -> None:
    first = assignment(book((8, 10.0)))
    share = sum(v == 8 for v in first.values()) / len(USERS) * 100
    assert abs(share - 10.0) <= 1.5, share
    assert assignment(book((8, 10.0))) == first  # later calls, and any other process's book, agree


def test_stepping_up_keeps_everyone_already_in_the_rollout_and_rollback_ends_it() -> None:
    ten = assignment(book((8, 10.0)))
    fifty = assignment(book((8, 50.0)))
    assert all(fifty[u] == 8 for u, v in ten.items() if v == 8)
    assert abs(sum(v == 8 for v in fifty.values()) / len(USERS) * 100 - 50.0) <= 1.5
    assert set(assignment(book()).values()) == {7}
    assert set(assignment(book((8, 100.0))).values()) == {8}


def test_each_prompt_and_label_splits_its_users_independently() -> None:
    b = PromptBook()
    labels = [PromptLabel("t1", "support", lb, 7, False, 0.0, None, ((8, 50.0),)) for lb in ("production", "staging")]
    b.update([version(7), version(8)], labels)
    prod = [b.resolve("t1", "support", None, "production", u)[0].version.version for u in USERS[:2000]]
    stag = [b.resolve("t1", "support", None, "staging", u)[0].version.version for u in USERS[:2000]]
    agree = sum(p == s for p, s in zip(prod, stag, strict=True)) / 2000
    assert 0.4 < agree < 0.6  # independent halves agree about half the time, not always


def test_a_version_pinned_by_number_ignores_the_rollout() -> None:
    b = book((8, 100.0))
    served, variant = b.resolve("t1", "support", 7, None, "user-1")
    assert (served.version.version, variant) == (7, None)


def test_a_stored_version_that_does_not_compile_is_skipped_not_fatal() -> None:
    bad = PromptContent(({"role": "user", "content": "{{ a.b }}"},), alias="a")
    broken = PromptVersion("t1", "broken", 1, content_hash(bad), bad, None, None, 0.0)
    b = PromptBook()
    b.update([broken, version(7)], [])
    assert b.resolve("t1", "support", 7, None)[0].version.version == 7
