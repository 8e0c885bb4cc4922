"""A call that its in-process caller stops waiting for still leaves a trace.

Jobs run calls through the pipeline in the gateway's own process; a job past its timeout is cancelled
while its upstream has not answered. The call's record must still be written (status error,
`client_closed`): the trace slot writes one record per authenticated call, whatever happens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from keel.testing import FakeUpstream, Script
from tests.conftest import Gateway, base_config, until


def test_a_job_cancelled_mid_call_leaves_its_trace(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> None:
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw["jobs"] = {"poll_s": 0.1, "kinds": {"openai.call": {"timeout_s": 0.5, "max_attempts": 1}}}
    gw: Gateway = make_gateway(raw)
    up.script(Script(delay=3.0))  # the upstream answers long after the job's timeout
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "slow"}]}
    headers = {"authorization": f"Bearer {gw.key}", "prefer": "respond-async"}
    r = httpx.post(gw.base_url + "/chat/completions", json=body, headers=headers)
    assert r.status_code == 202, r.text
    status_url = r.json()["status_url"]

    def ended() -> bool:
        return httpx.get(status_url, headers=headers).json()["status"] in ("failed", "cancelled", "completed")

    assert until(ended, 20)
    assert until(lambda: len(up.requests) == 1, 5)  # the call reached the upstream before the timeout
    traces = [t for t in gw.traces() if t.alias == "gpt-4o-mini"]
    assert len(traces) == 1, traces
    record = traces[0]
    assert (record.status, record.error_kind, record.http_status) == ("error", "client_closed", 499)
    assert record.latency_ms is not None and record.latency_ms >= 400
