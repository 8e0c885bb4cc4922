"""What a call cost: the bundled price table, per-model overrides, and the one cost rule.

THE ONE RULE. Usage is in OpenAI's convention (input includes cached and cache-write tokens;
output includes reasoning tokens), prices are USD per million tokens, and a missing special
price falls back to the plain input or output price:

    cost = [ (input - cached - cache_write) * price.input
           + cached * (price.cached_input or price.input)
           + cache_write * (price.cache_write or price.input)
           + (output - reasoning) * price.output
           + reasoning * (price.reasoning or price.output) ] / 1e6

Each token bucket is clamped at >= 0 and the total is rounded to 10 decimals. Providers whose
wire format counts differently (Anthropic reports cache tokens beside input) are converted to
this convention by their codec, never here. A model with no price costs None, not 0.
A cost is never absurd: codecs clamp token counts (keel.providers.base.counted), and a price is
finite and at most MAX_PRICE.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Protocol

from keel.types import Usage

log = logging.getLogger("keel.accounting")

MAX_PRICE = 100_000.0  # USD per million tokens; today's dearest models cost under $1,000
_DATE_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8})$")  # -2024-08-06, -20250929
_BEDROCK_PROFILE = re.compile(r"^(?:us|eu|apac|jp|au|ca|us-gov|global)\.(?=[a-z]+\.)")  # us.amazon.nova-pro-v1:0


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens. None means "no separate price": bill at input (or output)."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None
    reasoning: float | None = None

    def __post_init__(self) -> None:
        for name in ("input", "output", "cached_input", "cache_write", "reasoning"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= MAX_PRICE:  # NaN fails too
                raise ValueError(
                    f"price {name} must be between 0 and {MAX_PRICE:g} USD per million tokens, got {value}"
                )


class PriceFields(Protocol):
    """Anything shaped like a price, e.g. `keel.config.PriceConfig`."""

    @property
    def input(self) -> float: ...
    @property
    def output(self) -> float: ...
    @property
    def cached_input(self) -> float | None: ...
    @property
    def cache_write(self) -> float | None: ...
    @property
    def reasoning(self) -> float | None: ...


def price_from_config(obj: PriceFields) -> Price:
    return Price(obj.input, obj.output, obj.cached_input, obj.cache_write, obj.reasoning)


def cost_of(price: Price, usage: Usage) -> float:
    """THE ONE RULE (see the module docstring)."""
    cached = max(0, usage.cached_input_tokens)
    written = max(0, usage.cache_write_tokens)
    plain_in = max(0, usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens)
    reasoning = max(0, usage.reasoning_tokens)
    plain_out = max(0, usage.output_tokens - usage.reasoning_tokens)
    total = (
        plain_in * price.input
        + cached * _or(price.cached_input, price.input)
        + written * _or(price.cache_write, price.input)
        + plain_out * price.output
        + reasoning * _or(price.reasoning, price.output)
    )
    return round(total / 1e6, 10)


def _or(special: float | None, plain: float) -> float:
    return plain if special is None else special


@cache
def _bundled() -> tuple[str, Mapping[str, Price]]:
    """Read prices.json once, on first use."""
    text = resources.files("keel").joinpath("prices.json").read_text(encoding="utf-8")
    table: dict[str, Any] = json.loads(text)
    models = {name: Price(**fields) for name, fields in table["models"].items()}
    return str(table["version"]), models


def _normalise(model: str) -> str:
    """`openai/gpt-4o-2024-08-06` -> `gpt-4o`: drop a provider prefix and a date suffix; a Bedrock
    cross-region inference profile (`us.amazon.nova-pro-v1:0`) is priced as its model."""
    return _DATE_SUFFIX.sub("", _BEDROCK_PROFILE.sub("", model.rsplit("/", 1)[-1]))


class PriceBook:
    """Prices by model id; `cost` applies THE ONE RULE. Built once, read on every call."""

    def __init__(self, prices: Mapping[str, Price], version: str) -> None:
        self.version = version
        self._prices = dict(prices)
        self._by_length = sorted(self._prices, key=len, reverse=True)
        self._warned: set[str] = set()

    @classmethod
    def bundled(cls, overrides: Mapping[str, Price] | None = None) -> PriceBook:
        """The bundled table, with `overrides` (from config or the admin API) winning per model."""
        version, prices = _bundled()
        return cls({**prices, **(overrides or {})}, version)

    def lookup(self, model: str) -> Price | None:
        """Exact id, then without provider prefix and date, then the longest `<known>-...` prefix."""
        if (price := self._prices.get(model)) is not None:
            return price
        name = _normalise(model)
        if (price := self._prices.get(name)) is not None:
            return price
        for known in self._by_length:
            if name.startswith(known + "-"):
                return self._prices[known]
        return None

    def cost(self, model: str, usage: Usage) -> float | None:
        """USD for `usage` on `model`, or None (warned once per model) when it has no price."""
        price = self.lookup(model)
        if price is None:
            if model not in self._warned:
                self._warned.add(model)
                log.warning("no price for model %r; its cost is recorded as unknown", model)
            return None
        return cost_of(price, usage)
