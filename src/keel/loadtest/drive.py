"""Open-loop traffic: calls arrive on a Poisson schedule whether or not earlier ones have answered.

A closed loop (N clients, each waiting for its answer) slows down with the server and hides an overload;
an open loop keeps offering the profile's rate, so queueing shows as latency and refusals. The generator
measures its own lateness (actual send time against the schedule): when it falls behind, its figures are
flagged rather than blamed on the gateway. In-flight calls are bounded; a call beyond the bound is
counted as `not_sent`.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import aiohttp
import orjson

from keel.loadtest.profile import Call, Profile

MAX_IN_FLIGHT = 4096
CALL_TIMEOUT_S = 120.0
DRAIN_S = 30.0  # after the schedule ends, calls still running get this long
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "wizards",
    "quietly",
    "judge",
    "boxing",
    "matches",
]


@dataclass(slots=True)
class Result:
    at: float  # seconds since the phase began (scheduled send time)
    late_ms: float  # actual send time minus the scheduled one
    status: int  # HTTP status; 0 when no answer (timeout, connection error)
    code: str = ""  # the OpenAI error body's code (rate_limit_exceeded, target_saturated, ...)
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    overhead_ms: float | None = None
    alias: str = ""


@dataclass(slots=True)
class Phase:
    multiple: float
    offered_rps: float
    duration_s: float
    results: list[Result] = field(default_factory=list)
    not_sent: int = 0


def prompt_of(tokens: int, rng: random.Random) -> str:
    """About `tokens` tokens of filler text (~0.75 words per token)."""
    n = max(1, int(tokens * 0.75))
    return " ".join(rng.choice(WORDS) for _ in range(n))


def body_of(call: Call, rng: random.Random, stream: bool) -> bytes:
    tokens = rng.choice(call.prompt_tokens)
    body: dict[str, object] = {
        "model": call.alias,
        "messages": [{"role": "user", "content": prompt_of(tokens, rng)}],
        "max_tokens": call.max_tokens,
    }
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


async def run_phase(url: str, key: str, profile: Profile, multiple: float, seed: int) -> Phase:
    """Offer `profile.rate_rps × multiple` calls a second for `profile.duration_s`, then drain."""
    rng = random.Random(seed)
    rate = profile.rate_rps * multiple
    phase = Phase(multiple, rate, profile.duration_s)
    weights = [c.weight for c in profile.mix]
    limit = asyncio.Semaphore(MAX_IN_FLIGHT)
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT, limit_per_host=MAX_IN_FLIGHT)
    timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:
        tasks: set[asyncio.Task[None]] = set()
        t0 = time.perf_counter()
        at = rng.expovariate(rate)
        while at < profile.duration_s:
            delay = at - (time.perf_counter() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            if limit.locked():
                phase.not_sent += 1
            else:
                call = rng.choices(profile.mix, weights)[0]
                stream = rng.random() < call.stream
                task = asyncio.create_task(
                    _one(session, url, call, body_of(call, rng, stream), stream, at, t0, phase, limit)
                )
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            at += rng.expovariate(rate)
        if tasks:
            await asyncio.wait(tasks, timeout=DRAIN_S)
            for task in tasks:
                task.cancel()
    return phase


async def _one(
    session: aiohttp.ClientSession,
    url: str,
    call: Call,
    body: bytes,
    stream: bool,
    at: float,
    t0: float,
    phase: Phase,
    limit: asyncio.Semaphore,
) -> None:
    async with limit:
        sent = time.perf_counter()
        result = Result(at, (sent - t0 - at) * 1000, 0, alias=call.alias)
        headers = {"x-keel-feature": call.feature} if call.feature else None
        try:
            async with session.post(f"{url}/v1/chat/completions", data=body, headers=headers) as resp:
                result.status = resp.status
                overhead = resp.headers.get("x-keel-overhead-ms")
                result.overhead_ms = float(overhead) if overhead else None
                if resp.status != 200:
                    result.code = _code(await resp.read())
                elif stream:
                    async for _ in resp.content.iter_any():
                        if result.ttft_ms is None:
                            result.ttft_ms = (time.perf_counter() - sent) * 1000
                else:
                    await resp.read()
        except (TimeoutError, aiohttp.ClientError) as err:
            result.code = type(err).__name__
        result.latency_ms = (time.perf_counter() - sent) * 1000
        phase.results.append(result)


def _code(body: bytes) -> str:
    try:
        error = orjson.loads(body).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        return "unreadable"
    return str(error.get("code") or error.get("type") or "")
