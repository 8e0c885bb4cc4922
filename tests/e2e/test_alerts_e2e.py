"""Soft thresholds end to end: a budget crossing 50% warns in a header and calls the webhook once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai

from keel.testing import FakeUpstream
from keel.wire.webhook import sign
from tests.conftest import base_config, until
from tests.unit.test_alerts import Receiver, receiver  # noqa: F401  (the fixture)


def test_budget_crossing_warns_and_calls_the_webhook_once(
    make_gateway: Any,
    up: FakeUpstream,
    tmp_path: Path,
    receiver: Receiver,  # noqa: F811
) -> None:
    raw = base_config(up, f"sqlite:///{tmp_path}/k.db", tmp_path)
    raw["prices"] = {"gpt-4o-mini": {"input": 10_000, "output": 10_000}}  # $0.01 a token
    raw["limits"] = {
        "defaults": [{"scope": ["tenant"], "usd_total": 1.0}],
        "soft_thresholds": [0.5],
        "webhook": {"url": receiver.url, "secret": "s3cret", "retries": 2},
    }
    gw = make_gateway(raw)
    warnings = []
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0) as c:
        for _ in range(60):
            try:
                raw_reply = c.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=3
                )
            except openai.RateLimitError as err:
                assert err.code == "insufficient_quota"
                break
            warnings.append(raw_reply.headers.get("x-keel-limit-warning"))
    assert warnings[0] is None and any(w and "tenant=t1|usd_total" in w for w in warnings)
    # Each warned call reported the crossing as it was admitted; once every report is settled (sent, or
    # deduplicated as already handled) and nothing is queued or in flight, no further POST can come.
    sender, reports = gw.runtime.alerts, sum((w or "").count("tenant=t1|usd_total") for w in warnings)
    assert sender is not None
    stats = sender.stats
    assert until(lambda: stats.queued == 0 and stats.sent + stats.deduped + stats.failed + stats.dropped >= reports)
    assert (stats.sent, len(receiver.requests)) == (1, 1)
    headers, body = receiver.requests[0]
    assert headers["x-keel-signature"] == sign("s3cret", headers["x-keel-timestamp"], body)
    event = receiver.bodies()[0]
    assert (event["counter"], event["threshold"], event["limit"]) == ("tenant=t1|usd_total", 0.5, 1.0)
