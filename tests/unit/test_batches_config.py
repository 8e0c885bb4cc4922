"""`batches:` and `async_calls:` in keel.yaml: defaults, and each mistake named with its path and fix."""

from __future__ import annotations

from typing import Any

import pytest

from keel import config
from keel.errors import ConfigError
from tests.unit.test_config import good, issue_at


def test_defaults_keep_batch_lines_below_live_traffic_and_refuse_private_webhooks() -> None:
    cfg = config.parse(good(), {})

    assert cfg.batches.priority < 0 and cfg.batches.concurrency == 64 and cfg.batches.max_lines == 50_000
    assert cfg.async_calls.webhook_secret is None and not cfg.async_calls.allow_private_webhooks


@pytest.mark.parametrize(
    ("section", "value", "path"),
    [
        ("async_calls", {"async_only_aliases": ["fast", "nope"]}, "async_calls.async_only_aliases[1]"),
        ("async_calls", {"async_only_max_tokens": 0}, "async_calls.async_only_max_tokens"),
        ("async_calls", {"webhook_attemps": 3}, "async_calls.webhook_attemps"),
        ("batches", {"concurrency": 0}, "batches.concurrency"),
        ("batches", {"max_file_bytes": -1}, "batches.max_file_bytes"),
    ],
)
def test_mistakes_are_named(section: str, value: dict[str, Any], path: str) -> None:
    raw = good()
    raw[section] = value
    with pytest.raises(ConfigError) as info:
        config.parse(raw, {})

    issue = issue_at(info.value, path)
    if path.endswith("[1]"):
        assert "unknown alias 'nope'" in issue.message and "fast" in issue.fix
