"""`keel.limits.book` as pure data: which counters a call charges, how a refusal reads, when a quota warns."""

from __future__ import annotations

import pytest

from keel.config import LimitRule, LimitsConfig
from keel.errors import BudgetExceeded, RateLimited
from keel.limits.book import Estimate, LimitBook, Rule, Subject, book_from, refusal, warnings
from keel.store.protocols import Charge, LimitOverride

ANN = Subject(tenant="acme", key="k1", user="ann", feature="search", alias="fast")
ANONYMOUS = Subject(tenant="acme", key="k1", user=None, feature=None, alias="fast")


def _counters(book: LimitBook, who: Subject) -> dict[str, float]:
    return {c.counter: c.limit for c in book.charges(who, Estimate(0, 0))}


# ---- LimitBook


def test_rules_for_spells_each_scope_in_the_counter_prefix() -> None:
    book = LimitBook(
        [
            Rule(("tenant",), {"rpm": 60, "usd_month": 100}),
            Rule(("key",), {"tpm": 1000}),
            Rule(("alias",), {"concurrency": 4}),
        ],
        {},
    )
    assert sorted(book.rules_for(ANN)) == [
        ("alias=fast", "concurrency", 4),
        ("key=k1", "tpm", 1000),
        ("tenant=acme", "rpm", 60),
        ("tenant=acme", "usd_month", 100),
    ]


def test_charges_take_window_and_amount_from_the_kind() -> None:
    book = LimitBook([Rule(("tenant",), {"rpm": 60, "concurrency": 2, "tpm": 1000, "usd_day": 5, "usd_total": 50})], {})
    charges = {c.counter: c for c in book.charges(ANN, Estimate(tokens=300, usd=0.25))}
    assert charges == {
        "tenant=acme|rpm": Charge("tenant=acme|rpm", "minute", 60, 1.0),
        "tenant=acme|concurrency": Charge("tenant=acme|concurrency", "concurrent", 2, 1.0),
        "tenant=acme|tpm": Charge("tenant=acme|tpm", "minute", 1000, 300),
        "tenant=acme|usd_day": Charge("tenant=acme|usd_day", "day", 5, 0.25),
        "tenant=acme|usd_total": Charge("tenant=acme|usd_total", "total", 50, 0.25),
    }


def test_a_subjects_counters_are_kept_yet_each_call_gets_its_own_amounts() -> None:
    book = LimitBook([Rule(("tenant",), {"rpm": 60, "tpm": 1000, "usd_day": 5}), Rule(("user",), {"tpm": 10})], {})
    for tokens, usd in ((300, 0.25), (7, 0.5)):
        assert [c.amount for c in book.charges(ANN, Estimate(tokens, usd))] == [1.0, tokens, usd, tokens]
        assert book.amounts(ANN, tokens + 1, usd / 2) == [1.0, tokens + 1, usd / 2, tokens + 1]  # charges' order
    assert [c.counter for c in book.charges(ANONYMOUS, Estimate(1, 1))] == [
        "tenant=acme|rpm",
        "tenant=acme|tpm",
        "tenant=acme|usd_day",
    ]
    assert book.amounts(ANONYMOUS, 5, 0.5) == [1.0, 5, 0.5]


def test_combination_scopes_apply_only_when_every_dimension_is_known() -> None:
    book = LimitBook(
        [
            Rule(("tenant", "feature"), {"tpm": 500}),
            Rule(("tenant", "user"), {"rpm": 10}),
            Rule(("user",), {"tokens_day": 10_000}),
            Rule(("tenant", "alias"), {"rpm": 30}),
        ],
        {},
    )
    assert _counters(book, ANN) == {
        "tenant=acme|feature=search|tpm": 500,
        "tenant=acme|user=ann|rpm": 10,
        "user=ann|tokens_day": 10_000,
        "tenant=acme|alias=fast|rpm": 30,
    }
    assert _counters(book, ANONYMOUS) == {"tenant=acme|alias=fast|rpm": 30}  # no user, no feature: skipped


def test_an_override_replaces_the_default_kind_by_kind() -> None:
    book = LimitBook(
        [Rule(("tenant",), {"rpm": 60, "tpm": 1000}), Rule(("key",), {"rpm": 20})],
        {("tenant", "acme"): {"rpm": 600, "usd_day": 3}, ("key", "k2"): {"rpm": 1}},
    )
    assert _counters(book, ANN) == {
        "tenant=acme|rpm": 600,  # replaced
        "tenant=acme|tpm": 1000,  # kept: the override does not name it
        "tenant=acme|usd_day": 3,  # added
        "key=k1|rpm": 20,  # k2's override is not k1's
    }
    other = Subject("globex", "k2", None, None, "fast")
    assert _counters(book, other) == {"tenant=globex|rpm": 60, "tenant=globex|tpm": 1000, "key=k2|rpm": 1}


def test_no_rules_no_charges() -> None:
    assert LimitBook([], {}).charges(ANN, Estimate(10, 1)) == []


def test_fail_mode_per_tenant_with_a_default() -> None:
    book = LimitBook([], {}, on_store_error="closed", fail_modes={"acme": "open"})
    assert book.fail_mode("acme") == "open"
    assert book.fail_mode("globex") == "closed"
    assert LimitBook([], {}).fail_mode("acme") == "open"


def test_book_from_config_and_overrides() -> None:
    config = LimitsConfig(
        defaults=[
            LimitRule(scope=["tenant"], rpm=60, usd_month=100.0),
            LimitRule(scope=["tenant", "feature"], tpm=500),
        ],
        on_store_error="closed",
    )
    overrides = [
        LimitOverride("tenant", "acme", {"rpm": 600.0}, "open", 1.0),
        LimitOverride("tenant", "globex", {}, None, 1.0),
        LimitOverride("key", "k1", {"concurrency": 2.0}, None, 1.0),
    ]
    book = book_from(config, iter(overrides))  # any iterable, read once
    assert _counters(book, ANN) == {
        "tenant=acme|rpm": 600,
        "tenant=acme|usd_month": 100,
        "tenant=acme|feature=search|tpm": 500,
        "key=k1|concurrency": 2,
    }
    assert (book.fail_mode("acme"), book.fail_mode("globex"), book.fail_mode("initech")) == ("open", "closed", "closed")
    assert book_from(LimitsConfig(), []).charges(ANN, Estimate(1, 1)) == []


# ---- refusal


def test_a_rate_refusal_names_the_limit_and_when_to_retry() -> None:
    err = refusal(Charge("tenant=acme|rpm", "minute", 60, 1), 60, 12.3)
    assert isinstance(err, RateLimited) and err.status == 429
    assert err.message == "Rate limit reached: rpm 60 for tenant=acme. Retry after 12.3 s."
    assert err.headers() == {"retry-after": "13"}
    unknown = refusal(Charge("key=k1|concurrency", "concurrent", 2, 1), 2, None)
    assert isinstance(unknown, RateLimited) and unknown.headers() == {"retry-after": "1"}
    assert "concurrency 2 for key=k1" in unknown.message


def test_a_quota_refusal_says_exhausted_and_when_it_resets() -> None:
    err = refusal(Charge("tenant=acme|feature=search|usd_day", "day", 5, 0.5), 4.75, 3600)
    assert isinstance(err, BudgetExceeded) and not isinstance(err, RateLimited)
    assert (err.status, err.code) == (429, "insufficient_quota")
    assert err.message == "Quota exhausted: usd_day $5 for tenant=acme|feature=search (used 4.75). It resets in 3600 s."
    assert err.headers() == {"retry-after": "3600"}
    tokens = refusal(Charge("user=ann|tokens_month", "month", 1_000_000, 5000), 999_000, 60)
    assert "tokens_month 1e+06 for user=ann" in tokens.message


def test_a_total_budget_never_resets_so_no_retry_after() -> None:
    err = refusal(Charge("tenant=acme|usd_total", "total", 50, 1), 49.5, None)
    assert isinstance(err, BudgetExceeded)
    assert err.message == "Quota exhausted: usd_total $50 for tenant=acme (used 49.5)."
    assert err.headers() == {}


# ---- warnings


@pytest.mark.parametrize(
    ("used", "expected"),
    [(79.9, None), (80.0, 0.8), (94.0, 0.9), (120.0, 0.9)],
)
def test_warnings_report_the_highest_threshold_reached(used: float, expected: float | None) -> None:
    charge = Charge("tenant=acme|usd_month", "month", 100, 1)
    found = warnings([charge], [used], [0.9, 0.8])
    assert found == ([] if expected is None else [(charge, expected)])


def test_warnings_are_for_quotas_and_budgets_only() -> None:
    rate = Charge("tenant=acme|rpm", "minute", 10, 1)
    inflight = Charge("tenant=acme|concurrency", "concurrent", 2, 1)
    tokens = Charge("tenant=acme|tokens_day", "day", 1000, 10)
    assert warnings([rate, inflight, tokens], [10, 2, 850], [0.8]) == [(tokens, 0.8)]
    assert warnings([tokens], [850], []) == []


# ---- overrides changing under calls in flight


def test_a_book_names_the_overrides_that_changed_and_when_each_was_set() -> None:
    config = LimitsConfig(defaults=[LimitRule(scope=["tenant"], rpm=60)])
    before = book_from(config, [LimitOverride("tenant", "acme", {"usd_day": 5}, None, 100.0)])
    after = book_from(
        config,
        [
            LimitOverride("tenant", "acme", {"usd_day": 5}, "closed", 100.0),
            LimitOverride("key", "k1", {"tokens_day": 1000}, None, 200.0),
        ],
    )
    assert after.changed(before) == {("tenant", "acme"), ("key", "k1")}  # a fail mode is a change too
    assert after.changed(after) == set() and before.changed(after) == after.changed(before)
    assert after.set_at("key=k1|tokens_day") == 200.0
    assert after.set_at("tenant=acme|usd_day") == 100.0
    assert after.set_at("tenant=globex|rpm") == float("-inf")  # a configured default: always in force
