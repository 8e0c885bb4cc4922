"""THE ONE RULE against hand-worked bills, and how model ids resolve to prices."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest

from keel.providers.prices import MAX_PRICE, Price, PriceBook, cost_of, price_from_config
from keel.types import Usage
from keel.wire.base import MAX_TOKENS

# OpenAI-shaped: prompt 1000 of which 400 cached; completion 500 of which 200 reasoning.
OPENAI_USAGE = Usage(input_tokens=1000, cached_input_tokens=400, output_tokens=500, reasoning_tokens=200)


@pytest.fixture
def book() -> PriceBook:
    return PriceBook.bundled()


def test_openai_usage_on_gpt_4o_mini(book: PriceBook) -> None:
    # 600 x 0.15 + 400 x 0.075 + 300 x 0.60 + 200 x 0.60 (reasoning at output) = 420 per 1e6
    assert book.cost("gpt-4o-mini", OPENAI_USAGE) == pytest.approx(0.00042, abs=1e-12)


def test_openai_usage_on_o4_mini(book: PriceBook) -> None:
    # 600 x 1.10 + 400 x 0.275 + 300 x 4.40 + 200 x 4.40 = 2970 per 1e6
    assert book.cost("o4-mini", OPENAI_USAGE) == pytest.approx(0.00297, abs=1e-12)


def test_anthropic_usage_converted_on_claude_sonnet_4_5(book: PriceBook) -> None:
    # Anthropic wire: input_tokens=100 (uncached), cache_read=1000, cache_creation=2000, output=50.
    usage = Usage(
        input_tokens=100 + 1000 + 2000,
        cached_input_tokens=1000,
        cache_write_tokens=2000,
        output_tokens=50,
    )
    # 100 x 3 + 1000 x 0.30 + 2000 x 3.75 + 50 x 15 = 8850 per 1e6
    assert book.cost("claude-sonnet-4-5", usage) == pytest.approx(0.00885, abs=1e-12)


def test_unknown_model_costs_none_and_warns_once(book: PriceBook, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="keel.accounting"):
        assert book.cost("no-such-model", OPENAI_USAGE) is None
        assert book.cost("no-such-model", OPENAI_USAGE) is None
    warnings = [r for r in caplog.records if r.name == "keel.accounting"]
    assert len(warnings) == 1
    assert "no-such-model" in warnings[0].getMessage()


def test_override_beats_bundled_price() -> None:
    book = PriceBook.bundled({"gpt-4o-mini": Price(input=1.0, output=1.0)})
    assert book.cost("gpt-4o-mini", Usage(input_tokens=1_000_000)) == 1.0
    assert book.lookup("gpt-4o-mini-2024-07-18") == Price(input=1.0, output=1.0)
    assert book.lookup("gpt-4o") == PriceBook.bundled().lookup("gpt-4o")


@pytest.mark.parametrize(
    ("model", "known"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("anthropic/claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("openai/gpt-4.1-mini", "gpt-4.1-mini"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
    ],
)
def test_dated_and_prefixed_ids_resolve(book: PriceBook, model: str, known: str) -> None:
    price = book.lookup(model)
    assert price is not None
    assert price == book.lookup(known)


def test_gpt_4o_mini_snapshot_is_not_gpt_4o(book: PriceBook) -> None:
    price = book.lookup("gpt-4o-mini-2024-07-18")
    assert price == book.lookup("gpt-4o-mini")
    assert price != book.lookup("gpt-4o")
    assert book.lookup("gpt-4o-mini-search-preview") == book.lookup("gpt-4o-mini")


def test_prefix_needs_a_dash_after_the_known_id(book: PriceBook) -> None:
    assert book.lookup("gpt-5.1") is None
    assert book.lookup("o3x") is None


def test_buckets_clamp_at_zero() -> None:
    book = PriceBook({"m": Price(input=1.0, output=2.0)}, version="test")
    # More cached than input and more reasoning than output: no negative buckets.
    usage = Usage(input_tokens=10, cached_input_tokens=20, output_tokens=5, reasoning_tokens=8)
    assert book.cost("m", usage) == pytest.approx((20 * 1.0 + 8 * 2.0) / 1e6)


def test_rounded_to_ten_decimals() -> None:
    book = PriceBook({"m": Price(input=1 / 3, output=0.0)}, version="test")
    assert book.cost("m", Usage(input_tokens=1)) == round(1 / 3 / 1e6, 10)


def test_bundled_table_has_version_and_simulated_prices(book: PriceBook) -> None:
    assert book.version == "2026-11-01"
    sim = Price(input=1.0, output=2.0, cached_input=0.5)
    assert book.lookup("simulated-1") == sim
    assert book.lookup("simulated-embed-1") == sim


def test_price_from_config_copies_every_field() -> None:
    @dataclass(frozen=True)
    class Conf:
        input: float = 1.0
        output: float = 2.0
        cached_input: float | None = 0.1
        cache_write: float | None = 1.25
        reasoning: float | None = None

    assert price_from_config(Conf()) == Price(1.0, 2.0, 0.1, 1.25, None)


def test_negative_price_is_refused() -> None:
    with pytest.raises(ValueError, match="input"):
        Price(input=-1.0, output=0.0)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e9])
def test_a_price_that_is_not_finite_or_absurd_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match="output"):
        Price(input=1.0, output=value)


def test_a_cost_from_clamped_usage_is_bounded() -> None:
    # The most a codec lets through (keel.providers.base.MAX_TOKENS per count) at the dearest price allowed.
    top = Price(MAX_PRICE, MAX_PRICE)
    assert cost_of(top, Usage(input_tokens=MAX_TOKENS, output_tokens=MAX_TOKENS)) == 2 * MAX_TOKENS * MAX_PRICE / 1e6
