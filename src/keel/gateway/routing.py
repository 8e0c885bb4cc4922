"""Alias + request + principal → RoutePlan: which targets to try, in which order, and why.

One hop of redirection (the alias's task rules, then its classifier hook), then the routed alias's
targets are filtered (data residency, capabilities, context window) and ordered by its strategy:
ordered, weighted, latency or cost. Every decision lands in `RoutePlan.explain` for the trace.

Invariants: a tenant restricted to regions is never planned onto a target outside them (no
eligible target fails closed with 403); a plan is never silently empty (400 naming what is
missing, unless the alias has fallbacks to try); `plan` does no I/O. Everything per alias is
precomputed at construction.
"""

from __future__ import annotations

import hashlib
import importlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import orjson

from keel.config import AliasConfig, RuleConfig
from keel.errors import ConfigError, ConfigIssue, InvalidRequest, ModelNotFound, PermissionDenied
from keel.gateway.health import HealthBook, TargetHealth
from keel.providers.prices import Price, PriceBook, cost_of
from keel.types import JSON, ChatRequest, EmbeddingRequest, Principal, RoutePlan, Target, Usage

Request = ChatRequest | EmbeddingRequest
Classifier = Callable[..., object]  # fn(request, *, feature, tier) -> alias name | None

UNHEALTHY_RATE = 0.5  # recent error rate at which a target is ordered after the healthy ones
UNHEALTHY_MIN_CALLS = 5  # ...once it has at least this many recent outcomes
DEFAULT_OUTPUT_TOKENS = 256  # cost estimate when the request sets no max_tokens
_PARAM = {"tools": "tools", "vision": "messages", "json": "response_format"}
_NOTHING: frozenset[str] = frozenset()


def estimate_prompt_tokens(request: Request) -> int:
    """A cheap prompt size in tokens: characters / 4, plus 3 per message of chat framing.

    Counts string content, text parts, tool-call names and arguments, and the tool definitions.
    Images are not counted. Runs on every request, so it never tokenises.
    """
    if isinstance(request, EmbeddingRequest):
        return sum(map(len, request.inputs)) // 4 + sum(map(len, request.tokens))
    chars = 0
    for message in request.messages:
        content = message.content
        if isinstance(content, str):
            chars += len(content)
        elif content:
            for part in content:
                text = part.get("text") if part.get("type") == "text" else None
                chars += len(text) if isinstance(text, str) else 0
        for tool_call in message.tool_calls:
            chars += len(tool_call.name) + len(tool_call.arguments)
    if request.tools:
        chars += len(orjson.dumps(request.tools))
    return chars // 4 + 3 * len(request.messages)


def needs(request: Request) -> frozenset[str]:
    """The capabilities a target must have to serve `request`: tools, vision, json."""
    if isinstance(request, EmbeddingRequest):
        return _NOTHING
    vision = any(
        isinstance(m.content, list) and any(p.get("type") == "image_url" for p in m.content) for m in request.messages
    )
    if not (request.tools or vision or request.response_format is not None):
        return _NOTHING
    flags = (("tools", bool(request.tools)), ("vision", vision), ("json", request.response_format is not None))
    return frozenset(name for name, on in flags if on)


BUCKETS = 10_000  # a split's (and a prompt rollout's) shares are cut in hundredths of a percent


def bucket(key: str) -> int:
    """A stable bucket in [0, BUCKETS) for `key`: the same in every process and every release."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % BUCKETS


@dataclass(frozen=True, slots=True)
class _Route:
    """One alias, precomputed: targets with their keys, provider regions and prices."""

    name: str
    targets: tuple[Target, ...]
    keys: tuple[str, ...]
    regions: tuple[str | None, ...]
    prices: tuple[Price | None, ...]
    region_set: frozenset[str]
    strategy: str
    rules: tuple[tuple[str, RuleConfig], ...]  # (label, rule)
    split: tuple[tuple[int, str], ...]  # (bucket bound, alias), bounds increasing: an A/B test's variants
    classifier: Classifier | None
    fallbacks: tuple[str, ...]
    static_answer: str | None
    resume: bool


class Router:
    """Plans every request from precomputed aliases, live target health and the price book."""

    def __init__(
        self,
        aliases: Mapping[str, AliasConfig],
        regions: Mapping[str, str | None],
        prices: PriceBook,
        health: HealthBook,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._health = health
        self._rng = rng or random.Random()
        issues: list[ConfigIssue] = []
        self._routes = {name: _build_route(name, a, regions, prices, issues) for name, a in aliases.items()}
        if issues:
            raise ConfigError(issues)

    def aliases(self, allowed: tuple[str, ...] | None) -> list[str]:
        """The configured aliases the key may use (None = all), in config order."""
        return [a for a in self._routes if allowed is None or a in allowed]

    def plan(
        self,
        alias: str,
        request: Request,
        principal: Principal,
        allowed: tuple[str, ...] | None,
        *,
        feature: str | None = None,
        tier: str | None = None,
        follow_rules: bool = True,
        subject: str | None = None,
    ) -> RoutePlan:
        """The targets to try for `alias`, in order. Raises ModelNotFound, PermissionDenied or
        InvalidRequest; with follow_rules=False (fallback aliases) split, rules and classifier are ignored.
        `subject` (user, else session, else key) keeps a caller on one variant of a split."""
        route = self._routes.get(alias)
        if route is None or (allowed is not None and alias not in allowed):
            raise ModelNotFound(alias, self.aliases(allowed))
        tokens = estimate_prompt_tokens(request)
        need = needs(request)
        skipped: list[JSON] = []
        label = None
        variant, asked = None, route
        if follow_rules and route.split and subject is not None:
            variant = self._variant(route, principal, allowed, subject, skipped)
        if variant is not None:
            route, label = self._routes[variant], f"split → {variant}"
        elif follow_rules:
            route, label = self._redirect(route, request, principal, allowed, tokens, feature, tier, skipped)
        explain: JSON = {
            "requested": alias,
            "alias": route.name,
            "rule": label,
            "strategy": route.strategy,
            "prompt_tokens": tokens,
            "needs": sorted(need),
            "regions": None if principal.regions is None else list(principal.regions),
        }
        eligible = self._eligible(route, request, principal, tokens, need, skipped, explain)
        ranked = self._order(route, eligible, request, tokens)
        if follow_rules and asked.split:
            explain["split"] = variant or "control"
        explain["candidates"] = [candidate for _, candidate in ranked]
        explain["skipped"] = skipped
        return RoutePlan(
            alias=route.name,
            targets=tuple(route.targets[i] for i, _ in ranked),
            reason=label or f"strategy: {route.strategy}",
            explain=explain,
            fallbacks=route.fallbacks,
            static_answer=route.static_answer,
            resume=route.resume,
        )

    def _variant(
        self, route: _Route, principal: Principal, allowed: tuple[str, ...] | None, subject: str, skipped: list[JSON]
    ) -> str | None:
        """The split's variant alias for `subject`, or None for the alias's own targets (the control)."""
        b = bucket(f"{principal.tenant}\x00{route.name}\x00{subject}")
        for bound, alias in route.split:
            if b < bound:
                why = self._refusal(alias, principal, allowed)
                if why is None:
                    return alias
                skipped.append({"rule": f"split → {alias}", "why": why})
                return None
        return None

    # ---- one hop: rules, then the classifier -------------------------------------------------

    def _redirect(
        self,
        route: _Route,
        request: Request,
        principal: Principal,
        allowed: tuple[str, ...] | None,
        tokens: int,
        feature: str | None,
        tier: str | None,
        skipped: list[JSON],
    ) -> tuple[_Route, str | None]:
        has_tools = isinstance(request, ChatRequest) and bool(request.tools)
        for label, rule in route.rules:
            why = _rule_miss(rule, tokens, has_tools, feature, tier) or self._refusal(rule.use, principal, allowed)
            if why is None:
                return self._routes[rule.use], label
            skipped.append({"rule": label, "why": why})
        if route.classifier is None:
            return route, None
        try:
            choice = route.classifier(request, feature=feature, tier=tier)
        except Exception as exc:  # a broken hook must not break routing
            skipped.append({"rule": "classifier", "why": f"raised {type(exc).__name__}: {str(exc)[:200]}"})
            return route, None
        if choice is None:
            skipped.append({"rule": "classifier", "why": "returned None"})
            return route, None
        why = self._refusal(choice, principal, allowed) if isinstance(choice, str) else f"returned {choice!r}"
        if why is not None:
            skipped.append({"rule": "classifier", "why": why})
            return route, None
        assert isinstance(choice, str)
        return self._routes[choice], f"classifier → {choice}"

    def _refusal(self, alias: str, principal: Principal, allowed: tuple[str, ...] | None) -> str | None:
        """Why a rule or the classifier may not send this call to `alias`, or None if it may."""
        route = self._routes.get(alias)
        if route is None:
            return f"unknown alias '{alias}'"
        if allowed is not None and alias not in allowed:
            return f"alias '{alias}' is not allowed for this key"
        if principal.regions is not None and route.region_set.isdisjoint(principal.regions):
            return f"alias '{alias}' has no target in tenant's regions [{', '.join(principal.regions)}]"
        return None

    # ---- filter and order the targets ---------------------------------------------------------

    def _eligible(
        self,
        route: _Route,
        request: Request,
        principal: Principal,
        tokens: int,
        need: frozenset[str],
        skipped: list[JSON],
        explain: JSON,
    ) -> list[int]:
        """Indexes of the targets that may and can serve the request, in config order."""
        indexes = range(len(route.targets)) if principal.regions is None else _in_region(route, principal, skipped)
        window = _window_need(request, tokens)
        kept: list[int] = []
        unfit: list[JSON] = []
        for i in indexes:
            target = route.targets[i]
            if target.capabilities is not None and not need <= target.capabilities:
                why = f"lacks {', '.join(sorted(need - target.capabilities))}"
            elif target.context_window is not None and window > target.context_window:
                why = f"context window {target.context_window} < ~{window} tokens"
            else:
                kept.append(i)
                continue
            unfit.append({"target": route.keys[i], "why": why})
        skipped.extend(unfit)
        if kept or not unfit:
            return kept
        error = _unservable(route, indexes, need, unfit)
        if not route.fallbacks:
            raise error
        explain["unservable"] = f"{error.message}; trying fallbacks"
        return []

    def _order(self, route: _Route, eligible: list[int], request: Request, tokens: int) -> list[tuple[int, JSON]]:
        """`eligible` in the alias's strategy order, each with its explained candidate entry."""
        if route.strategy == "ordered":
            return [(i, {"target": route.keys[i], "score": None}) for i in eligible]
        if route.strategy == "weighted":
            # Efraimidis–Spirakis: u^(1/w), largest first, is a weighted order without replacement.
            draw = {i: self._rng.random() ** (1 / route.targets[i].weight) for i in eligible}
            order = sorted(eligible, key=draw.__getitem__, reverse=True)
            return [(i, {"target": route.keys[i], "score": route.targets[i].weight}) for i in order]
        if route.strategy == "latency":
            scores = self._latencies(route, eligible, request)
        else:
            scores = _costs(route, eligible, request, tokens)
        sick = {i: _unhealthy(self._health.get(route.keys[i])) for i in eligible}
        unknown_first = route.strategy == "latency"  # unmeasured targets get measured; unpriced go last
        order = sorted(eligible, key=lambda i: (sick[i], (scores[i] is None) != unknown_first, scores[i] or 0.0))
        ranked: list[tuple[int, JSON]] = []
        for i in order:
            entry: JSON = {"target": route.keys[i], "score": scores[i]}
            if sick[i]:
                entry["unhealthy"] = True
            ranked.append((i, entry))
        return ranked

    def _latencies(self, route: _Route, eligible: list[int], request: Request) -> dict[int, float | None]:
        streaming = isinstance(request, ChatRequest) and request.stream
        scores: dict[int, float | None] = {}
        for i in eligible:
            h = self._health.get(route.keys[i])
            ms = None if h is None else h.ttft_ms if streaming else h.latency_ms
            scores[i] = None if ms is None else round(ms, 3)
        return scores


def _costs(route: _Route, eligible: list[int], request: Request, tokens: int) -> dict[int, float | None]:
    """Estimated USD per call: `tokens` in, max_tokens (or a default) out."""
    if isinstance(request, ChatRequest):
        usage = Usage(input_tokens=tokens, output_tokens=request.max_tokens or DEFAULT_OUTPUT_TOKENS)
    else:
        usage = Usage(input_tokens=tokens)
    return {i: None if (p := route.prices[i]) is None else cost_of(p, usage) for i in eligible}


def _unhealthy(h: TargetHealth | None) -> bool:
    return h is not None and len(h.recent) >= UNHEALTHY_MIN_CALLS and h.error_rate >= UNHEALTHY_RATE


def _in_region(route: _Route, principal: Principal, skipped: list[JSON]) -> list[int]:
    """Residency: targets whose provider region the tenant allows. None left fails closed (403)."""
    allowed = principal.regions or ()
    names = ", ".join(allowed) or "(none)"
    kept = []
    for i, region in enumerate(route.regions):
        if region is not None and region in allowed:
            kept.append(i)
        else:
            skipped.append({"target": route.keys[i], "why": f"region {region or 'unset'} not in tenant's [{names}]"})
    if not kept:
        raise PermissionDenied(
            f"tenant '{principal.tenant}' is restricted to regions {names}; "
            f"no target of alias '{route.name}' is in them"
        )
    return kept


def _window_need(request: Request, tokens: int) -> int:
    """Tokens that must fit the context window: prompt plus asked-for output; embeddings per input."""
    if isinstance(request, EmbeddingRequest):
        return max(map(len, request.inputs), default=0) // 4 + max(map(len, request.tokens), default=0)
    return tokens + (request.max_tokens or 0)


def _unservable(route: _Route, indexes: Sequence[int], need: frozenset[str], unfit: list[JSON]) -> InvalidRequest:
    """The 400 for a request no (in-region) target of the alias can serve, naming what is missing."""
    targets = [route.targets[i] for i in indexes]
    missing = [c for c in sorted(need) if not any(t.capabilities is None or c in t.capabilities for t in targets)]
    if missing:
        return InvalidRequest(
            f"no target of alias '{route.name}' supports {' and '.join(missing)}", param=_PARAM[missing[0]]
        )
    whys = "; ".join(f"{u['target']} {u['why']}" for u in unfit)
    return InvalidRequest(f"no target of alias '{route.name}' can serve this request ({whys})", param="messages")


def _rule_miss(rule: RuleConfig, tokens: int, has_tools: bool, feature: str | None, tier: str | None) -> str | None:
    """The first condition of `rule` this request fails, or None when every given one matches."""
    if rule.min_prompt_tokens is not None and tokens < rule.min_prompt_tokens:
        return f"prompt_tokens {tokens} < min_prompt_tokens {rule.min_prompt_tokens}"
    if rule.max_prompt_tokens is not None and tokens > rule.max_prompt_tokens:
        return f"prompt_tokens {tokens} > max_prompt_tokens {rule.max_prompt_tokens}"
    if rule.tools is not None and has_tools != rule.tools:
        return "tools present" if has_tools else "no tools"
    if rule.feature is not None and feature != rule.feature:
        return f"feature {feature!r} is not {rule.feature!r}"
    if rule.tier is not None and tier != rule.tier:
        return f"tier {tier!r} is not {rule.tier!r}"
    return None


def _build_route(
    name: str, alias: AliasConfig, regions: Mapping[str, str | None], prices: PriceBook, issues: list[ConfigIssue]
) -> _Route:
    targets = tuple(
        Target(
            t.provider,
            t.model,
            context_window=t.context_window,
            capabilities=None if t.capabilities is None else frozenset(t.capabilities),
            weight=t.weight,
        )
        for t in alias.targets
    )
    target_regions = tuple(regions.get(t.provider) for t in targets)
    return _Route(
        name=name,
        targets=targets,
        keys=tuple(t.key for t in targets),
        regions=target_regions,
        prices=tuple(prices.lookup(t.model) for t in targets),
        region_set=frozenset(r for r in target_regions if r is not None),
        strategy=alias.strategy,
        rules=tuple((f"rules[{i}] → {r.use}", r) for i, r in enumerate(alias.rules)),
        split=_split(alias),
        classifier=_import_classifier(name, alias.classifier, issues),
        fallbacks=tuple(alias.fallbacks),
        static_answer=alias.static_answer,
        resume=alias.resume == "auto",
    )


def _split(alias: AliasConfig) -> tuple[tuple[int, str], ...]:
    bound, out = 0, []
    for v in alias.split:
        bound += round(v.weight * BUCKETS / 100)
        out.append((bound, v.use))
    return tuple(out)


def _import_classifier(alias: str, spec: str | None, issues: list[ConfigIssue]) -> Classifier | None:
    """Resolve "package.module:function" once, at start-up; problems become config issues."""
    if spec is None:
        return None
    module, _, attr = spec.partition(":")
    path = f"models.{alias}.classifier"
    try:
        fn = getattr(importlib.import_module(module), attr)
    except Exception as exc:
        fix = "make the module importable (installed or on PYTHONPATH) and define the function in it"
        issues.append(ConfigIssue(path, f"cannot import {spec!r}: {type(exc).__name__}: {exc}", fix))
        return None
    if not callable(fn):
        issues.append(ConfigIssue(path, f"{spec!r} is not callable", "point it at a function"))
        return None
    classifier: Classifier = fn
    return classifier
