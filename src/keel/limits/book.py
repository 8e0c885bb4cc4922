"""Limits as data: which counters a call charges, and how a refusal reads.

A `LimitBook` holds the configured default rules plus per-tenant and per-key overrides (from the
store, refreshed in the background). For one call it yields `Charge`s — one per (scope, kind) that
applies — which a `LimitStore` admits all or nothing. Counter names spell the scope, e.g.
`tenant=acme|feature=search|usd_day`, so usage views and refusals can say exactly which limit held.
A counter is named by scope and kind only, never by the limit's value: changing a limit keeps its
count. Each override remembers when it was set (`set_at`): a counter it adds counts spend from then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from keel.config import LimitsConfig
from keel.errors import BudgetExceeded, RateLimited, RequestError
from keel.store.protocols import Charge, LimitOverride, Window

# kind → (window, what one call charges: "request" (1), "tokens" or "usd")
KINDS: dict[str, tuple[Window, str]] = {
    "rpm": ("minute", "request"),
    "tpm": ("minute", "tokens"),
    "concurrency": ("concurrent", "request"),
    "tokens_day": ("day", "tokens"),
    "tokens_month": ("month", "tokens"),
    "usd_day": ("day", "usd"),
    "usd_month": ("month", "usd"),
    "usd_total": ("total", "usd"),
}
QUOTA_KINDS = frozenset({"tokens_day", "tokens_month", "usd_day", "usd_month", "usd_total"})
QUOTA_WINDOWS = frozenset({"day", "month", "total"})  # the windows of QUOTA_KINDS, and only theirs
_UNIT = {"request": 0, "tokens": 1, "usd": 2}  # a unit's place in the amounts tuple of `charges`
_SUBJECTS_KEPT = 4096  # subjects whose counters a book keeps worked out (user and feature come from calls)
SCOPES = ("tenant", "key", "user", "feature", "alias", "team")


@dataclass(frozen=True, slots=True)
class Rule:
    scope: tuple[str, ...]
    limits: Mapping[str, float]  # kind → limit


@dataclass(frozen=True, slots=True)
class Subject:
    """Who a call is, on every scope a rule can name. None: unknown, so rules naming it do not apply."""

    tenant: str
    key: str | None  # key id; a call always has one, a usage query may not
    user: str | None
    feature: str | None
    alias: str | None
    team: str | None = None  # the key's team as "tenant:team" (team names hold no ':')

    def get(self, scope: str) -> str | None:
        return getattr(self, scope)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Estimate:
    tokens: float
    usd: float


class LimitBook:
    def __init__(
        self,
        defaults: Iterable[Rule],
        overrides: Mapping[tuple[str, str], Mapping[str, float]],
        *,
        on_store_error: str = "open",
        fail_modes: Mapping[str, str] | None = None,
        set_at: Mapping[tuple[str, str], float] | None = None,
    ) -> None:
        self._defaults = tuple(defaults)
        self._overrides = dict(overrides)  # (scope, subject) → kind → limit, for tenant, key and team scopes
        self._default_fail = on_store_error
        self._fail_modes = dict(fail_modes or {})  # tenant → "open" | "closed"
        self._set_at = {f"{scope}={subject}": at for (scope, subject), at in (set_at or {}).items()}
        # subject → (its charge of one request, unit) per limit that applies: rules are walked once per subject
        self._counters: dict[Subject, tuple[tuple[Charge, int], ...]] = {}

    def changed(self, before: LimitBook) -> set[tuple[str, str]]:
        """The (scope, subject) overrides that differ from `before`'s, fail modes included."""
        subjects = self._overrides.keys() | before._overrides.keys()
        out = {s for s in subjects if self._overrides.get(s) != before._overrides.get(s)}
        tenants = self._fail_modes.keys() | before._fail_modes.keys()
        out |= {("tenant", t) for t in tenants if self._fail_modes.get(t) != before._fail_modes.get(t)}
        return out

    def set_at(self, counter: str) -> float:
        """When the override behind `counter` was set (wall clock); -inf for a configured default."""
        return self._set_at.get(counter.rsplit("|", 1)[0], float("-inf"))

    def fail_mode(self, tenant: str) -> str:
        """What to do for this tenant when the counter store is unreachable."""
        return self._fail_modes.get(tenant, self._default_fail)

    def rules_for(self, who: Subject) -> list[tuple[str, str, float]]:
        """(counter prefix, kind, limit) for every limit that applies to `who`."""
        out: dict[tuple[str, str], float] = {}
        for rule in self._defaults:
            values = [who.get(s) for s in rule.scope]
            if any(v is None for v in values):
                continue  # e.g. a per-feature rule and a call without a feature
            prefix = "|".join(f"{s}={v}" for s, v in zip(rule.scope, values, strict=True))
            for kind, limit in rule.limits.items():
                out[(prefix, kind)] = limit
        for scope in ("tenant", "key", "team"):
            subject = who.get(scope)
            for kind, limit in self._overrides.get((scope, subject or ""), {}).items():
                out[(f"{scope}={subject}", kind)] = limit  # an override replaces the default
        return [(prefix, kind, limit) for (prefix, kind), limit in out.items()]

    def charges(self, who: Subject, estimate: Estimate | Callable[[], Estimate]) -> list[Charge]:
        """The charges of one call. `estimate` may be a callable: it is only worked out if a limit applies."""
        counters = self._counters.get(who)
        if counters is None:
            counters = self._counters_of(who)
        if not counters:
            return []
        est = estimate() if callable(estimate) else estimate
        amounts = (1.0, est.tokens, est.usd)
        return [c if not unit else Charge(c.counter, c.window, c.limit, amounts[unit]) for c, unit in counters]

    def _counters_of(self, who: Subject) -> tuple[tuple[Charge, int], ...]:
        """`who`'s charges of one request, each with its unit, kept: the same subjects call again and again,
        and a book never changes. A charge counting requests is used as it is (its amount is always 1)."""
        counters = tuple(
            (Charge(f"{prefix}|{kind}", KINDS[kind][0], limit, 1.0), _UNIT[KINDS[kind][1]])
            for prefix, kind, limit in self.rules_for(who)
        )
        if len(self._counters) >= _SUBJECTS_KEPT:
            self._counters.clear()  # many distinct users or features: start over rather than grow
        self._counters[who] = counters
        return counters

    def amounts(self, who: Subject, tokens: float, usd: float) -> list[float]:
        """What each of `charges(who, ...)` really cost once the call ended, in their order (requests stay 1)."""
        counters = self._counters.get(who)
        if counters is None:
            counters = self._counters_of(who)
        spent = (1.0, tokens, usd)
        return [spent[unit] for _, unit in counters]


def kind_of(charge: Charge) -> str:
    return charge.counter.rsplit("|", 1)[1]


def refusal(charge: Charge, used: float, retry_after: float | None) -> RequestError:
    """The 429 for a charge that did not fit: names the scope and the limit."""
    scope, kind = charge.counter.rsplit("|", 1)
    limit = f"${charge.limit:g}" if kind.startswith("usd") else f"{charge.limit:g}"
    if kind in QUOTA_KINDS:
        when = "" if retry_after is None else f" It resets in {retry_after:.0f} s."
        return BudgetExceeded(f"Quota exhausted: {kind} {limit} for {scope} (used {used:g}).{when}", retry_after)
    wait = 1.0 if retry_after is None else retry_after
    return RateLimited(f"Rate limit reached: {kind} {limit} for {scope}. Retry after {wait:.1f} s.", wait)


def warnings(
    charges: Iterable[Charge], used: Iterable[float], thresholds: Iterable[float]
) -> list[tuple[Charge, float]]:
    """(charge, highest threshold reached) for quota and budget charges at or over a soft threshold."""
    marks = sorted(thresholds)
    out = []
    for charge, value in zip(charges, used, strict=True):
        if charge.window not in QUOTA_WINDOWS or not charge.limit or not marks or value < marks[0] * charge.limit:
            continue
        reached = [t for t in marks if value >= t * charge.limit]
        if reached:
            out.append((charge, reached[-1]))
    return out


def book_from(config: LimitsConfig, overrides: Iterable[LimitOverride]) -> LimitBook:
    """The book for keel.yaml's default rules plus the stored overrides (tenants' fail modes among them)."""
    defaults = [
        Rule(tuple(rule.scope), {kind: float(v) for kind in KINDS if (v := getattr(rule, kind)) is not None})
        for rule in config.defaults
    ]
    rows = list(overrides)
    fail_modes = {o.subject: o.on_store_error for o in rows if o.scope == "tenant" and o.on_store_error}
    return LimitBook(
        defaults,
        {(o.scope, o.subject): o.limits for o in rows},
        on_store_error=config.on_store_error,
        fail_modes=fail_modes,
        set_at={(o.scope, o.subject): o.updated_at for o in rows},
    )
