"""Policy: a tool's decision for one call (allow, deny, approve), from its rules' conditions on the
call's arguments (per-tool rate limits and budgets: keel.agents.budgets).

A condition is `<argument path> <operator> <JSON literal>` (`amount > 100`, `to.country in ["US", "CA"]`,
`dry_run == false`): no expressions, nothing evaluated. A condition whose argument is missing or of another
type does not hold. A rule may also name the roles and the named agents it is for.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from keel.agents.tools import ToolSpec

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "!=": operator.ne,
    "==": operator.eq,
    ">": operator.gt,
    "<": operator.lt,
    "not in": lambda a, b: a not in b,
    "in": lambda a, b: a in b,
}
_SHAPE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s+(>=|<=|!=|==|>|<|not in|in)\s+(.+?)\s*$")


@dataclass(frozen=True, slots=True)
class Condition:
    path: tuple[str, ...]
    op: str
    value: Any

    @classmethod
    def parse(cls, text: str) -> Condition:
        m = _SHAPE.match(text)
        if m is None:
            raise ValueError(f"condition '{text}': write <argument> <op> <JSON value>, e.g. amount > 100")
        try:
            value = orjson.loads(m.group(3))
        except orjson.JSONDecodeError:
            raise ValueError(f"condition '{text}': the value must be JSON (strings in double quotes)") from None
        if m.group(2) in ("in", "not in") and not isinstance(value, list):
            raise ValueError(f"condition '{text}': 'in' takes a JSON list")
        return cls(tuple(m.group(1).split(".")), m.group(2), value)

    def holds(self, args: Any) -> bool:
        for key in self.path:
            if not isinstance(args, dict) or key not in args:
                return False
            args = args[key]
        try:
            return bool(_OPS[self.op](args, self.value))
        except TypeError:
            return False


_compiled = functools.lru_cache(maxsize=4096)(Condition.parse)  # a condition's text parses once


@dataclass(frozen=True, slots=True)
class Subject:
    """Who a call is made for, as rules name it: the run's named agent (if any) and the roles in play."""

    agent: str | None = None
    roles: frozenset[str] = frozenset()


ANYONE = Subject()


def decide(spec: ToolSpec, args: dict[str, Any], who: Subject = ANYONE) -> str:
    """allow | deny | approve for this call of `spec` by `who`: the first rule that applies decides."""
    for rule in spec.policy.rules:
        if rule.roles is not None and who.roles.isdisjoint(rule.roles):
            continue
        if rule.agents is not None and who.agent not in rule.agents:
            continue
        if rule.when is None or _compiled(rule.when).holds(args):
            return rule.action
    return spec.policy.default
