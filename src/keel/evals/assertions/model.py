"""The vocabulary of scoring: what an assertion sees (`Output`, `Scoring`), what it says (`Verdict`), and
the parsed assertion itself. `InvalidSuite` names the place in a suite that is wrong and how to fix it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class InvalidSuite(ValueError):
    """A suite, test or assertion that cannot run. `where` is its path (`tests[2].assert[0].type`)."""

    def __init__(self, message: str, where: str) -> None:
        super().__init__(f"{where}: {message}")
        self.message = message
        self.where = where


@dataclass(frozen=True, slots=True)
class Output:
    """What a scorer sees of one model answer."""

    text: str
    tool_calls: tuple[Mapping[str, object], ...] = ()
    latency_ms: float = 0.0
    cost_usd: float = 0.0
    trace_id: str | None = None
    raw: Mapping[str, object] = field(default_factory=dict)
    cached: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    """One assertion's result. `weight` 0 reports without gating; `error` is set when it could not be
    scored (a judge call failed), which is a failure the gate counts apart from a wrong answer."""

    type: str
    passed: bool
    score: float
    reason: str
    weight: float = 1.0
    metric: str | None = None
    error: str | None = None


class Judge(Protocol):
    """An LLM call through the gateway (so it is traced and priced)."""

    async def __call__(self, messages: Sequence[Mapping[str, object]], *, alias: str) -> Output: ...


Embed = Callable[[Sequence[str]], Sequence[Sequence[float]]]


@dataclass(frozen=True, slots=True)
class Scoring:
    """What an assertion may use besides the output. `grader` is the judge's alias when an assertion
    names no `provider`; `tools` are the tools offered to the model (for is-valid-openai-tools-call)."""

    vars: Mapping[str, object] = field(default_factory=dict)
    expected: str | None = None
    context: Sequence[str] = ()
    judge: Judge | None = None
    embed: Embed | None = None
    grader: str | None = None
    tools: Sequence[Mapping[str, object]] = ()


@dataclass(frozen=True, slots=True)
class Assertion:
    """A parsed assertion: `kind` is the base type, `negate` is set for a `not-` type."""

    type: str
    kind: str
    negate: bool
    value: object
    threshold: float | None
    weight: float
    metric: str | None = None
    provider: str | None = None
