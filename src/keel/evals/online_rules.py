"""Online eval rules and score queries as the edges give them (admin API, CLI): parsed and checked here,
each error an InvalidRequest naming its field, so a rule that is stored can run."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from keel.errors import InvalidRequest
from keel.evals.assertions import NEEDS_VALUE, InvalidSuite, needs_expected, parse_assertion
from keel.evals.online import scorer_name
from keel.store.protocols import OnlineRule, ScoreGroup, ScoreQuery
from keel.store.protocols.online import SCORE_DIMENSIONS
from keel.traces.writer import parse_window


def validate_scorers(scorers: Sequence[Any], python_modules: Sequence[str] = ()) -> tuple[dict[str, Any], ...]:
    """The rule's scorers, each parsed once to refuse what cannot run online; raises ValueError naming it.
    `python` scorers may name functions of `python_modules` (evals.python_modules) only, checked before
    any import, as suites are."""
    out = []
    names: set[str] = set()
    for i, obj in enumerate(scorers):
        if not isinstance(obj, dict):
            raise ValueError(f"scorers[{i}] must be an assertion object, e.g. {{'type': 'icontains', 'value': 'x'}}")
        if obj.get("type") in ("python", "not-python"):
            module = str(obj.get("value") or "").partition(":")[0]
            if not any(module == m or module.startswith(m + ".") for m in python_modules):
                fix = f"list {module!r} in evals.python_modules in keel.yaml" if module else "value is module:function"
                raise InvalidSuite(
                    f"python scorers of module {module!r} are not allowed here: {fix}", f"scorers[{i}].value"
                )
        assertion = parse_assertion(obj, f"scorers[{i}]")
        if needs_expected(assertion) or (assertion.value is None and assertion.kind in NEEDS_VALUE):
            raise ValueError(f"scorers[{i}]: '{obj.get('type')}' needs an expected output, which live traffic lacks")
        name = scorer_name(obj)
        if name in names:
            raise ValueError(f"scorers[{i}]: two scorers named '{name}'; give one a 'metric' name")
        names.add(name)
        out.append(dict(obj))
    return tuple(out)


_RULE_KEYS = frozenset(
    {"name", "rate", "scorers", "tenant", "alias", "feature", "prompt_version", "tags", "delay_s", "enabled"}
)
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
MAX_SCORERS = 20
MAX_DELAY_S = 7 * 86400.0


def rule_from_body(body: Any, now: float, python_modules: Sequence[str] = ()) -> OnlineRule:
    """An `OnlineRule` from its JSON form; InvalidRequest naming the field otherwise."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", None)
    unknown = sorted(set(body) - _RULE_KEYS)
    if unknown:
        raise InvalidRequest(f"Unknown field(s) {unknown}; a rule takes {sorted(_RULE_KEYS)}.", unknown[0])
    name = body.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidRequest("'name' must be 1-100 characters of letters, digits and _.:-", "name")
    rate = body.get("rate")
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
        raise InvalidRequest("'rate' must be a share of calls between 0 and 1, e.g. 0.1 for 10%.", "rate")
    delay = body.get("delay_s", 0)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= MAX_DELAY_S:
        raise InvalidRequest(f"'delay_s' must be seconds between 0 and {MAX_DELAY_S:g}.", "delay_s")
    scorers = body.get("scorers")
    if not isinstance(scorers, list) or not 1 <= len(scorers) <= MAX_SCORERS:
        raise InvalidRequest(f"'scorers' must be a list of 1 to {MAX_SCORERS} assertion objects.", "scorers")
    try:
        parsed = validate_scorers(scorers, python_modules)
    except InvalidSuite as err:
        raise InvalidRequest(f"{err.where}: {err.message}", err.where) from None
    except ValueError as err:
        raise InvalidRequest(str(err), "scorers") from None
    filters = {k: _filter(body, k) for k in ("tenant", "alias", "feature", "prompt_version")}
    tags = body.get("tags") or {}
    if not isinstance(tags, dict) or len(tags) > 20 or not all(isinstance(v, str | int | float) for v in tags.values()):
        raise InvalidRequest("'tags' must be an object of up to 20 tag names and values.", "tags")
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise InvalidRequest("'enabled' must be true or false.", "enabled")
    return OnlineRule(
        name=name,
        rate=float(rate),
        scorers=parsed,
        tags=tuple(sorted((str(k)[:200], str(v)[:200]) for k, v in tags.items())),
        delay_s=float(delay),
        enabled=enabled,
        updated_at=now,
        **filters,
    )


def _filter(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and (not isinstance(value, str) or not value or len(value) > 256 or "\x00" in value):
        raise InvalidRequest(f"'{key}' must be a non-empty string of at most 256 characters.", key)
    return value


_SCORE_PARAMS = ("since", "until", "by", "rule", "scorer", "feature", "alias", "tenant", "limit")


def score_query(params: dict[str, str], now: float) -> ScoreQuery:
    """A bounded ScoreQuery from string parameters (query string or CLI flags)."""
    for name in params:
        if name not in _SCORE_PARAMS:
            raise InvalidRequest(f"Unknown parameter '{name}'; use: {', '.join(_SCORE_PARAMS)}.", name)
    by = params.get("by", "none")
    if by not in SCORE_DIMENSIONS:
        raise InvalidRequest(f"'by' must be one of: {', '.join(SCORE_DIMENSIONS)}.", "by")
    since, until = parse_window(params.get("since", "24h"), params.get("until"), now)
    try:
        limit = min(10_000, max(1, int(params.get("limit", "100"))))
    except ValueError:
        raise InvalidRequest("'limit' must be an integer.", "limit") from None
    filters = {k: params.get(k) or None for k in ("rule", "scorer", "feature", "alias", "tenant")}
    return ScoreQuery(since, until, by, limit=limit, **filters)


def score_view(g: ScoreGroup) -> dict[str, Any]:
    return {"scorer": g.scorer, "group": g.group, "count": g.count, "mean": g.mean, "pass_rate": g.pass_rate}
