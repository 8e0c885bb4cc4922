"""Self-hosted servers that start cold: is a provider's server `ready`, `warming` (loading) or `down`?

Only providers that declare `readiness` are tracked (`WarmthBook`); the others are never asked about.
A tracked server begins each process in a cold period (`warming`, "not probed yet"). While it is not
ready, a background worker polls its readiness URL every `readiness_interval_s`: connection refused
or a 503 is `warming` (a server loading its model), any other failure is `down`; a 2xx then runs the
`warmup` calls (one-token chats to each of its models, so the first real call does not pay the model
load) and only then is the server `ready`, which ends the cold period and records its time to ready.
While ready nothing is polled: a call that cannot connect or gets a 503 asks for one probe at once
(`recheck`, shared by the calls failing together) and a failing probe starts a new cold period.

Warming is not failing: the failover stage holds a call for up to `cold_start_wait_s` when the call's
deadline outlasts that wait (`hold_for`), else moves it to the next target at once, and never feeds
a warming server's errors to its circuit breaker. The first call of a cold period to meet the server
not ready POSTs `wake_url` (a scaler's hook), once per cold period.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from keel.errors import ErrorKind, KeelError, ProviderError
from keel.gateway.capability import Worker
from keel.providers.base import Provider
from keel.types import ChatRequest, Message, Target

if TYPE_CHECKING:
    import aiohttp

    from keel.config import Config

log = logging.getLogger("keel.warmth")
State = Literal["ready", "warming", "down"]
STATES: tuple[State, ...] = ("ready", "warming", "down")
PROBE_TIMEOUT_S = 5.0  # one readiness request, connect included
WAKE_TIMEOUT_S = 10.0
# Health endpoints by provider type, from the server's root; other types answer `<base_url>/models`.
DEFAULT_READINESS = {"vllm": "/health", "tgi": "/health", "ollama": "/api/tags"}
WARMUP_PROMPT = "Hi"


class ProbeFailed(Exception):
    """A readiness request that got no HTTP answer; `refused`: nothing listens on the port (yet)."""

    def __init__(self, message: str, *, refused: bool) -> None:
        super().__init__(message)
        self.refused = refused


def readiness_url(provider_type: str, base_url: str, readiness: bool | str) -> str:
    """The URL to poll: `true` picks the type's default; a /path is taken from the server's root."""
    if readiness is True:
        path = DEFAULT_READINESS.get(provider_type)
        if path is None:
            return base_url.rstrip("/") + "/models"
        readiness = path
    assert isinstance(readiness, str)
    if readiness.startswith("/"):
        parts = urlsplit(base_url)
        return f"{parts.scheme}://{parts.netloc}{readiness}"
    return readiness


def verdict(status: int, body: bytes) -> tuple[State, str]:
    """A readiness answer's meaning: 2xx ready; 503 warming (vLLM, TGI and HF endpoints say 503 while
    they load); anything else down, with what it said."""
    if 200 <= status < 300:
        return "ready", ""
    said = body[:120].decode("utf-8", "replace").strip()
    why = f"readiness answered {status}" + (f": {said}" if said else "")
    return ("warming" if status == 503 else "down"), why


def may_be_cold(err: ProviderError) -> bool:
    """A call's failure that may mean the server is (re)starting: no connection, or a 503."""
    return err.error_kind is ErrorKind.network or err.upstream_status == 503


@dataclass(frozen=True, slots=True)
class ColdStart:
    """One provider's cold-start settings, resolved from its config."""

    provider: str
    url: str  # readiness URL
    origin: str  # host:port of the provider's server
    headers: Mapping[str, str]  # the provider's own headers (credentials): sent only to `origin`
    interval_s: float
    wait_s: float  # cold_start_wait_s
    warmup: int  # calls per model
    models: tuple[str, ...]  # the upstream model ids the aliases route to on this provider
    wake_url: str | None
    timeout_s: float = 600.0  # a warm-up call's bound: the provider's own timeout


class Http:
    """The probes' and wake hooks' HTTP client: one aiohttp session, made on first use (in the loop)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def get(self, url: str, headers: Mapping[str, str], timeout_s: float) -> tuple[int, bytes]:
        import aiohttp

        try:
            async with self._open().get(
                url, headers=dict(headers), timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as r:
                return r.status, await r.content.read(4096)
        except aiohttp.ClientConnectorError as exc:
            refused = isinstance(exc.os_error, ConnectionRefusedError)
            raise ProbeFailed(f"cannot connect: {exc.os_error!r}", refused=refused) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProbeFailed(f"no answer: {type(exc).__name__}", refused=False) from None

    async def post(self, url: str, body: dict[str, Any], timeout_s: float) -> int:
        import aiohttp

        async with self._open().post(url, json=body, timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
            return r.status

    def _open(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class Warmth:
    """One server's readiness, its cold periods and what happened in them. Event-loop confined."""

    def __init__(
        self,
        spec: ColdStart,
        provider: Provider,
        http: Http,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self._provider = provider
        self._http = http
        self._clock = clock
        self.state: State = "warming"
        self.why = "not probed yet"
        self.since: float | None = clock()  # when the current cold period began; None while ready
        self.time_to_ready_s: float | None = None  # the last cold period's
        self.cold_starts = 0  # cold periods ended (the server became ready)
        self.wakes = 0  # wake_url POSTs sent (answered or not)
        self.wake_failures = 0
        self.warmups = {"ok": 0, "error": 0}
        self.calls: dict[tuple[str, str], int] = {}  # (target, waited | rerouted) → calls
        self.waiting = 0  # calls held right now
        self._woken = False  # wake_url POSTed in this cold period
        self._ready = asyncio.Event()
        self._check: asyncio.Future[tuple[State, str]] | None = None
        self._tasks: set[asyncio.Future[None]] = set()

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    # ---- transitions -------------------------------------------------------------------------

    def went_cold(self, state: State, why: str) -> None:
        """The server is not ready (`warming` or `down`): a ready one starts a new cold period."""
        if self.state == "ready":
            self.since = self._clock()
            self._woken = False
            self._ready.clear()
            log.warning("%s is not ready (%s): holding or rerouting its calls", self.spec.provider, why)
        self.state, self.why = state, why

    def became_ready(self) -> None:
        """Probed ready and warmed up: the cold period ends, and the calls held for it go on."""
        if self.state == "ready":
            return
        now = self._clock()
        self.time_to_ready_s = now - (self.since if self.since is not None else now)
        self.cold_starts += 1
        self.state, self.why, self.since = "ready", "", None
        self._ready.set()
        log.info("%s is ready after %.1f s", self.spec.provider, self.time_to_ready_s)

    # ---- the poller (a Worker) ---------------------------------------------------------------

    async def poll(self) -> None:
        """One pass of the readiness worker: nothing while ready; else probe, warm up, and maybe end the cold period."""
        if self.state == "ready":
            return
        state, why = await self.probe()
        if state != "ready":
            self.went_cold(state, why)
            return
        if self.spec.warmup:  # up, and loading what the first calls need: held calls may wait for it
            self.went_cold("warming", f"warming up: {self.spec.warmup} call(s) per model")
        trouble = await self._warm_up()
        if trouble is not None:
            self.went_cold("warming", trouble)
            return
        self.became_ready()

    async def probe(self) -> tuple[State, str]:
        """One readiness request, and what its answer means."""
        spec = self.spec
        headers = spec.headers if urlsplit(spec.url).netloc == spec.origin else {}  # credentials stay home
        try:
            status, body = await self._http.get(spec.url, headers, PROBE_TIMEOUT_S)
        except ProbeFailed as exc:
            if exc.refused:
                return "warming", "connection refused: the server is not listening yet"
            return "down", f"readiness: {exc}"
        return verdict(status, body)

    async def _warm_up(self) -> str | None:
        """Send the warm-up calls; None when done, else why the server still looks cold."""
        for model in self.spec.models:
            for _ in range(self.spec.warmup):
                request = ChatRequest(model, (Message("user", WARMUP_PROMPT),), max_tokens=1)
                try:
                    async with asyncio.timeout(self.spec.timeout_s):
                        async for _event in self._provider.chat(request, Target(self.spec.provider, model)):
                            pass
                except (KeelError, TimeoutError) as err:
                    self.warmups["error"] += 1
                    if isinstance(err, ProviderError) and may_be_cold(err):
                        return f"warm-up call to {model} failed: {err.message}"
                    log.warning("warm-up call to %s/%s failed: %s", self.spec.provider, model, err)
                    continue
                self.warmups["ok"] += 1
        return None

    # ---- what the failover stage asks --------------------------------------------------------

    async def recheck(self) -> bool:
        """After a call could not connect or got a 503: is the server cold? Probes now (one probe for
        every call failing meanwhile); a failing probe starts a cold period."""
        if self.state != "ready":
            return True
        if self._check is None or self._check.done():
            self._check = asyncio.ensure_future(self.probe())
        state, why = await asyncio.shield(self._check)
        if state == "ready":
            return False
        self.went_cold(state, why)
        return True

    def hold_for(self, remaining_s: float) -> float:
        """Seconds a call with `remaining_s` of deadline left may wait for readiness: `cold_start_wait_s`
        when the server is warming and the deadline outlasts that wait, else 0 (move on at once)."""
        wait = self.spec.wait_s
        return wait if self.state == "warming" and 0 < wait < remaining_s else 0.0

    async def wait_ready(self, timeout_s: float) -> bool:
        """Wait until the server is ready, at most `timeout_s`: True if it is."""
        self.waiting += 1
        try:
            async with asyncio.timeout(timeout_s):
                await self._ready.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self.waiting -= 1

    def wake(self) -> None:
        """A call met the server not ready: POST `wake_url`, once per cold period, without waiting."""
        if self.spec.wake_url is None or self._woken:
            return
        self._woken = True
        task = asyncio.ensure_future(self._post_wake(self.spec.wake_url))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post_wake(self, url: str) -> None:
        self.wakes += 1
        body = {"provider": self.spec.provider, "state": self.state, "reason": self.why}
        try:
            status = await self._http.post(url, body, WAKE_TIMEOUT_S)
        except Exception as exc:  # a scaler that does not answer must not break the calls
            status, why = 0, f"{type(exc).__name__}"
        else:
            why = f"HTTP {status}"
        if not 200 <= status < 300:
            self.wake_failures += 1
            log.warning("wake_url of %s failed: %s", self.spec.provider, why)

    def counted(self, target: str, outcome: Literal["waited", "rerouted"]) -> None:
        self.calls[(target, outcome)] = self.calls.get((target, outcome), 0) + 1

    def retry_after(self) -> float:
        """A guess, in seconds, at when the server is ready: the last time to ready less this period's age."""
        age = self._clock() - self.since if self.since is not None else 0.0
        return max(1.0, (self.time_to_ready_s or self.spec.wait_s or 5.0) - age)

    def view(self) -> dict[str, Any]:
        """For `keel targets`, /readyz and /metrics."""
        age = None if self.since is None else round(self._clock() - self.since, 3)
        ttr = None if self.time_to_ready_s is None else round(self.time_to_ready_s, 3)
        return {"state": self.state, "why": self.why or None, "not_ready_s": age, "time_to_ready_s": ttr}

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._check is not None:
            self._check.cancel()


class WarmthBook:
    """The tracked servers, by provider name. Empty when no provider declares readiness."""

    def __init__(self, warmths: Mapping[str, Warmth], http: Http | None = None) -> None:
        self._by_provider = dict(warmths)
        self._http = http

    def __bool__(self) -> bool:
        return bool(self._by_provider)

    def get(self, provider: str) -> Warmth | None:
        return self._by_provider.get(provider)

    def items(self) -> list[tuple[str, Warmth]]:
        return sorted(self._by_provider.items())

    def targets(self) -> list[tuple[str, Warmth]]:
        """(target key, its server's Warmth) for every target the aliases route to a tracked server."""
        return [(f"{name}/{model}", w) for name, w in self.items() for model in w.spec.models]

    def workers(self) -> list[Worker]:
        return [Worker(f"readiness:{name}", w.poll, every_s=w.spec.interval_s, first_s=0.0) for name, w in self.items()]

    async def aclose(self) -> None:
        for _, warmth in self.items():
            await warmth.aclose()
        if self._http is not None:
            await self._http.aclose()


def build_warmth(
    config: Config, providers: Mapping[str, Provider], headers: Callable[[str], Mapping[str, str]]
) -> WarmthBook:
    """A Warmth for each provider that declares `readiness`; `headers(name)` gives its request headers."""
    from keel.catalog import CATALOG

    tracked = {name: p for name, p in config.providers.items() if p.readiness not in (None, False)}
    if not tracked:
        return WarmthBook({})
    http = Http()
    warmths = {}
    for name, p in tracked.items():
        assert p.readiness is not None
        base_url = p.base_url or CATALOG[p.type].base_url or ""
        models = {t.model: None for a in config.models.values() for t in a.targets if t.provider == name}
        url = readiness_url(p.type, base_url, p.readiness)
        spec = ColdStart(
            name,
            url,
            urlsplit(base_url).netloc,
            headers(name),
            p.readiness_interval_s,
            p.cold_start_wait_s,
            p.warmup,
            tuple(models),
            p.wake_url,
            p.timeout_s,
        )
        warmths[name] = Warmth(spec, providers[name], http)
    return WarmthBook(warmths, http)
