"""`GET /metrics`: the runtime's per-call counters plus gauges read at scrape time, in Prometheus text.

Open on the bind address like /healthz unless `metrics.require_token` asks for the admin token.
The gauges cost one breaker-store read (one Redis round trip when breakers are shared) per scrape.
"""

from __future__ import annotations

import hmac
from typing import cast

from starlette.requests import Request
from starlette.responses import Response

from keel.api.openai import bearer, error_response
from keel.audit.siem import SiemShipper
from keel.dashboard.throttle import LoginStats
from keel.errors import AuthError
from keel.gateway.warmth import STATES, WarmthBook
from keel.jobs.pool import JobPool
from keel.rag.index import Index
from keel.rag.rerank import OUTCOMES, Reranker
from keel.runtime.components import Runtime
from keel.traces.metrics import CONTENT_TYPE, Family, Kind, Labels

BREAKER_VALUES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


class MetricsEndpoint:
    def __init__(self, runtime: Runtime, logins: LoginStats | None = None) -> None:
        self._rt = runtime
        self._logins = logins or LoginStats()
        cfg = runtime.config
        self._token = (cfg.admin_token or "").encode() if cfg.metrics.require_token else None
        self._warmth = runtime.find(WarmthBook) or None  # None: no provider declares readiness

    async def scrape(self, request: Request) -> Response:
        if self._token is not None and not hmac.compare_digest((bearer(request) or "").encode(), self._token):
            return error_response(AuthError("/metrics needs the admin token (metrics.require_token is true)."))
        assert self._rt.metrics is not None  # the route exists only when metrics are enabled
        families = [
            *await self._breakers(),
            *self._process(),
            *self._cold_starts(),
            *await self._jobs(),
            *self._rerank(),
        ]
        body = self._rt.metrics.render(families)
        return Response(body, 200, media_type=CONTENT_TYPE)

    async def _breakers(self) -> list[Family]:
        rt = self._rt
        known = {b.target: b for b in await rt.breakers.states()}
        targets = sorted({f"{t.provider}/{t.model}" for a in rt.config.models.values() for t in a.targets} | set(known))
        state = [({"target": t}, BREAKER_VALUES.get(known[t].state, 0.0) if t in known else 0.0) for t in targets]
        fails = [({"target": t}, float(known[t].consecutive_failures) if t in known else 0.0) for t in targets]
        return [
            Family("keel_breaker_state", "gauge", "Circuit breaker per target: 0 closed, 1 half-open, 2 open.", state),
            Family("keel_breaker_consecutive_failures", "gauge", "Consecutive failures seen by the breaker.", fails),
        ]

    async def _jobs(self) -> list[Family]:
        """The job queue's depth and oldest age per queue and state (one store read), and this process's pool."""
        rt = self._rt
        out: list[Family] = []
        pool = rt.find(JobPool)
        if pool is not None:
            done = [({"outcome": k}, float(n)) for k, n in sorted(pool.finished.items())]
            out += [
                _one("keel_jobs_running", "gauge", "Jobs running in this process.", len(pool.running)),
                _one("keel_jobs_claiming_up", "gauge", "1 while this process's job workers can claim (0: the store does not answer).", float(pool.trouble is None)),
                Family("keel_jobs_attempts_total", "counter", "Job attempts ended in this process, by outcome.", done),
            ]  # fmt: skip
        if rt.jobs is None:
            return out
        try:
            depths = await rt.jobs.depths()
        except Exception:  # the store is down: /readyz says so; the scrape still answers
            return [*out, _one("keel_jobs_store_up", "gauge", "1 when the job queue's depths could be read.", 0.0)]
        labels = [({"queue": d.queue, "state": d.state}, d) for d in depths]
        out += [
            _one("keel_jobs_store_up", "gauge", "1 when the job queue's depths could be read.", 1.0),
            Family("keel_jobs", "gauge", "Jobs per queue and state (queued, running, dead).", [(k, float(d.count)) for k, d in labels]),
            Family("keel_jobs_oldest_age_seconds", "gauge", "Age of the oldest job per queue and state (queued: since due; running: since started).", [(k, d.oldest_s) for k, d in labels if d.state != "dead"]),
            Family("keel_jobs_stuck", "gauge", "Unfinished jobs whose lease expired jobs.stuck_after times in a row with no progress.", [(k, float(d.stuck)) for k, d in labels if d.state != "dead"]),
        ]  # fmt: skip
        return out

    def _process(self) -> list[Family]:
        """This process's queues and background writers."""
        rt = self._rt
        gates = rt.gates.view()

        def per_gate(field: str) -> list[tuple[Labels, float]]:
            return [({"target": str(g["target"])}, float(cast(int, g[field]))) for g in gates]

        w, keys = rt.writer.stats, rt.authenticator
        out = [
            Family("keel_queue_depth", "gauge", "Calls waiting for a slot of a capped target.", per_gate("queued")),
            Family("keel_queue_in_flight", "gauge", "Calls holding a slot of a capped target.", per_gate("in_flight")),
            Family("keel_queue_rejected_total", "counter", "Calls refused by a saturated target's queue.", per_gate("rejected")),
            _one("keel_trace_queue_depth", "gauge", "Trace records waiting for the writer (its lag).", rt.writer.depth),
            _one("keel_traces_written_total", "counter", "Trace records written to the store.", w.written),
            _one("keel_traces_spilled_total", "counter", "Trace records spilled to local files.", w.spilled),
            _one("keel_traces_reloaded_total", "counter", "Spilled trace records loaded back.", w.reloaded),
            _one("keel_traces_dropped_total", "counter", "Trace records lost (overflow buffer and disk full).", w.dropped),
            _one("keel_trace_flush_failures_total", "counter", "Failed trace flushes (retried, then spilled).", w.failed_flushes),
            _one("keel_traces_quarantined_total", "counter", "Trace records no store would take, in the dead-letter file.", w.quarantined),
            _one("keel_trace_writer_up", "gauge", "1 while the trace writer can write; 0 crashed, stalled or losing records (see /readyz).", float(rt.writer.health() is None)),
            _one("keel_trace_writer_restarts_total", "counter", "Times the trace writer loop crashed and was restarted.", w.restarts),
            _one("keel_trace_writer_last_error_timestamp_seconds", "gauge", "When the trace writer last failed (0: never).", w.last_error_at or 0.0),
            _one("keel_unauthenticated_total", "counter", "Calls refused before authentication (not traced).", rt.trace_stage.unauthenticated),
            _one("keel_limits_store_unavailable_total", "counter", "Admissions that met an unreachable limit store.", rt.limits_stage.unavailable),
            _one("keel_store_unreachable", "gauge", "1 while the database does not answer (keys serve from memory).", float(keys.store_down())),
            _one("keel_key_state_age_seconds", "gauge", "Seconds since the database last vouched for cached keys.", keys.state_age()),
            _one("keel_keys_served_stale_total", "counter", "Calls whose key was served from its last known state.", keys.stats.stale),
            _one("keel_keys_unavailable_total", "counter", "Calls refused 503: key unknown while the database is silent.", keys.stats.unavailable),
            _one("keel_dashboard_login_failures_total", "counter", "Dashboard logins with a wrong token.", self._logins.failures),
            _one("keel_dashboard_login_throttled_total", "counter", "Dashboard logins refused 429 during a lockout.", self._logins.throttled),
        ]  # fmt: skip
        if rt.exporter is not None:
            e = rt.exporter.stats
            out += [
                _one("keel_otel_queue_depth", "gauge", "Spans waiting for the OpenTelemetry exporter.", rt.exporter.depth),
                _one("keel_otel_spans_exported_total", "counter", "Spans the OTLP receiver accepted.", e.exported),
                _one("keel_otel_spans_dropped_total", "counter", "Spans dropped: export queue full.", e.dropped),
                _one("keel_otel_spans_failed_total", "counter", "Spans given up on after retries.", e.failed),
                _one("keel_otel_exporter_up", "gauge", "1 while the OpenTelemetry exporter runs; 0 crashed (see /readyz).", float(rt.exporter.health() is None)),
                _one("keel_otel_exporter_restarts_total", "counter", "Times the exporter loop crashed and was restarted.", e.restarts),
            ]  # fmt: skip
        states = rt.workers.states
        if states:
            up = [({"worker": n}, float(s.failing is None)) for n, s in states.items()]
            restarts = [({"worker": n}, float(s.restarts)) for n, s in states.items()]
            out += [
                Family("keel_worker_up", "gauge", "1 while a background worker runs; 0 crashed, until it restarts (see /readyz).", up),
                Family("keel_worker_restarts_total", "counter", "Times a background worker failed and was restarted.", restarts),
            ]  # fmt: skip
        senders = [a.stats for a in (rt.alerts, rt.rule_alerts) if a is not None]
        if senders:
            out += [
                _one("keel_alerts_sent_total", "counter", "Alert webhooks delivered.", sum(a.sent for a in senders)),
                _one("keel_alerts_failed_total", "counter", "Alert webhooks given up on.", sum(a.failed for a in senders)),
            ]  # fmt: skip
        siem = rt.find(SiemShipper)
        if siem is not None:
            st = siem.stats
            out += [
                _one("keel_audit_siem_lag_entries", "gauge", "Audit entries not yet accepted by the SIEM receiver.", st.lag),
                _one("keel_audit_siem_delivered_total", "counter", "Audit entries the SIEM receiver accepted.", st.delivered),
                _one("keel_audit_siem_failures_total", "counter", "Failed SIEM deliveries (each retried).", st.failures),
                _one("keel_audit_siem_active", "gauge", "1 while this process holds the SIEM lease and ships the audit stream.", float(st.role == "active")),
                _one("keel_audit_siem_up", "gauge", "1 while the last SIEM delivery succeeded (or none was due).", float(st.failing is None)),
            ]  # fmt: skip
        if rt.rules is not None:
            firing = [({"rule": name}, float(n)) for name, n in sorted(rt.rules.firing.items())]
            out.append(
                Family(
                    "keel_alert_rule_firing", "gauge", "Scope values over a rule's threshold at its last check.", firing
                )
            )
        return out

    def _rerank(self) -> list[Family]:
        """RAG reranking outcomes in this process (keel.rag.rerank): applied, or why it was skipped; and the
        memory its in-process indexes hold against `rag.in_process_mb` (decision 0068)."""
        out: list[Family] = []
        reranker = self._rt.find(Reranker)
        if reranker is not None:
            counts = [({"outcome": o}, float(reranker.outcomes[o])) for o in OUTCOMES]
            out.append(
                Family(
                    "keel_rag_rerank_total", "counter", "RAG rerank calls, by outcome (skipped unless applied).", counts
                )
            )
        index = self._rt.find(Index)
        if index is not None:
            out += [
                _one("keel_rag_in_process_bytes", "gauge", "Memory the RAG builds searched in this process hold (estimated).", index.vectors.nbytes),
                _one("keel_rag_in_process_builds", "gauge", "RAG builds searched in this process.", len(index.vectors.held())),
            ]  # fmt: skip
        return out

    def _cold_starts(self) -> list[Family]:
        """Self-hosted servers' readiness (gateway/warmth.py), per target and per provider."""
        if self._warmth is None:
            return []
        targets = self._warmth.targets()
        providers = self._warmth.items()
        state = [({"target": t, "state": s}, float(w.state == s)) for t, w in targets for s in STATES]
        ttr = [({"target": t}, w.time_to_ready_s or 0.0) for t, w in targets if w.time_to_ready_s is not None]
        waiting = [({"target": t}, float(w.waiting)) for t, w in targets]
        calls = [({"target": t, "outcome": o}, float(n)) for _, w in providers for (t, o), n in sorted(w.calls.items())]
        starts = [({"provider": p}, float(w.cold_starts)) for p, w in providers]
        wakes = [({"provider": p}, float(w.wakes)) for p, w in providers]
        warmups = [({"provider": p, "outcome": o}, float(n)) for p, w in providers for o, n in w.warmups.items()]
        return [
            Family("keel_target_state", "gauge", "Readiness of a self-hosted target's server: 1 for its current state (ready, warming, down).", state),
            Family("keel_target_time_to_ready_seconds", "gauge", "How long the target's server took to become ready (and warm) in its last cold period.", ttr),
            Family("keel_target_cold_start_waiting", "gauge", "Calls held right now for the target's server to become ready.", waiting),
            Family("keel_cold_start_calls_total", "counter", "Calls that met the target warming: waited for it, or rerouted at once or after the wait.", calls),
            Family("keel_provider_cold_starts_total", "counter", "Cold periods a self-hosted server came out of (it became ready).", starts),
            Family("keel_provider_wakes_total", "counter", "wake_url POSTs sent (once per cold period that got traffic).", wakes),
            Family("keel_provider_warmup_calls_total", "counter", "Warm-up calls sent when the server became ready.", warmups),
        ]  # fmt: skip


def _one(name: str, kind: Kind, help: str, value: float) -> Family:
    return Family(name, kind, help, [({}, float(value))])
