"""How a capability joins the runtime: one builder, `build(ctx) -> Contribution`.

A capability package (keys, limits, cache, traces, alerts, the gateway core itself) exposes one
builder; `runtime/components.py` lists them, one line each, and calls them in that order. A builder
reads its config section from `ctx.config`, finds the objects earlier builders offered with
`ctx.get(Kind)` / `ctx.find(Kind)`, and returns what it adds:

- `stages`: (slot, stage) pairs; `gateway.pipeline.SLOTS` orders the slots, the list order breaks ties;
- `invoke`: the last handler (the gateway core gives it);
- `workers`: background work the runtime supervises (`Worker`, run by `runtime/workers.py`);
- `start` / `close`: hooks run in builder order at start-up, in reverse at shutdown;
- `jobs`: handlers of job kinds (`{kind: async def handle(job, ctx) -> result}`), run by keel.jobs'
  workers; a kind has one handler across all builders.

What other builders and the edges need, a builder offers with `ctx.add(obj)`; they find it by type
(`ctx.get(Authenticator)`, `runtime.get(Authenticator)`).

Sibling capabilities never import each other (import-linter). Where one offers another something,
the type they meet on is a port declared here (`CredentialScrub`, `ThresholdAlert`): the offering
builder adds it with `ctx.add(value, as_=Port)`, the using one finds it with `ctx.find(Port)`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from keel.config import Config
from keel.gateway.pipeline import Handler, Stage
from keel.store.protocols import Charge, JobHandler, Store

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Worker:
    """Background work: `run` is one pass every `every_s` seconds (the first after `first_s`, by default
    `every_s`), or with `every_s` None a loop that runs until cancelled (or returns when it is done).

    A pass or loop that raises is restarted after a backoff (1 s doubling to 60 s), and until it runs
    again /readyz and /metrics name it failing. A worker that handles its own expected failures (a
    store outage) keeps catching them: the supervisor is for what escapes.
    """

    name: str
    run: Callable[[], Awaitable[None]]
    every_s: float | None = None
    first_s: float | None = None


@dataclass(frozen=True, slots=True)
class Contribution:
    stages: Sequence[tuple[str, Stage]] = ()
    invoke: Handler | None = None
    workers: Sequence[Worker] = ()
    start: Sequence[Callable[[], None]] = ()
    close: Sequence[Callable[[], Awaitable[None]]] = ()
    jobs: Mapping[str, JobHandler] = field(default_factory=dict)


class CredentialScrub(Protocol):
    """Port: cleans free text (an upstream's error message) of credentials. Offered by traces (its
    redactor), used by the gateway core for the providers."""

    def __call__(self, text: str) -> str: ...


class ThresholdAlert(Protocol):
    """Port: a soft limit crossed (charge, threshold reached, amount used). Offered by alerts (the
    `limits.webhook` sender), used by limits."""

    def __call__(self, charge: Charge, threshold: float, used: float) -> None: ...


class AuditTrail(Protocol):
    """Port: records in the audit log a change no admin call made (a retention sweep that deleted data, an
    alert rule firing or resolving). Offered by audit; traces and alerts build before it, so they find it
    when they run (`ctx.find(AuditTrail)` inside their workers). Blocking: call it off the event loop."""

    def __call__(self, actor: str, action: str, target: str | None, *, tenant: str | None, result: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class Pipeline:
    """The composed pipeline (trace → … → invoke), offered once every builder has run: a job handler
    that makes model calls finds it at run time with `ctx.get(Pipeline)`."""

    handler: Handler


class Context:
    """What builders share: the config, the store, and the objects earlier builders offered, by type."""

    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store
        self._found: dict[Any, object] = {}

    def add(self, value: object, *, as_: Any = None) -> None:
        """Offer `value` under its own type, or under the port `as_`."""
        kind = as_ if as_ is not None else type(value)
        if kind in self._found:
            raise ValueError(f"{getattr(kind, '__name__', kind)} is offered twice")
        self._found[kind] = value

    def find(self, kind: type[T]) -> T | None:
        return self._found.get(kind)  # type: ignore[return-value]

    def get(self, kind: type[T]) -> T:
        found = self.find(kind)
        if found is None:
            raise LookupError(f"no builder before this one offers {kind.__name__}: check the runtime's builder order")
        return found


Builder = Callable[[Context], Contribution]
