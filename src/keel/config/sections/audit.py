"""`audit`: the audit log's streaming export to a customer's SIEM (keel.audit.siem), and how an agent tool
call's outcome commits.

    audit:
      siem: {url: https://siem.example/keel, secret: ${KEEL_SIEM_SECRET}, batch: 100, interval_s: 5}
      tool_outcomes: durable   # or fast (decision 0062)

`tool_outcomes: fast` commits a tool call's `tool.result` entry and its call row's move to done|failed
without waiting for PostgreSQL's WAL flush (synchronous_commit off for those transactions only). A Keel
process killed at any point loses nothing; a crash of the database server or its OS can lose the last
outcomes committed (at most ~3 × wal_writer_delay), in commit order: the chain stays valid and the call
reads `running` (outcome unknown, never run again). The claim to `running`, `tool.run` and every other
entry stay durable. No effect on SQLite, whose commits do not wait for a flush (synchronous=NORMAL).

Entries go out in seq order, in batches of at most `batch`, signed with HMAC-SHA256 like Keel's other
webhooks; a batch that fails is retried with backoff (1 s doubling to `backoff_max_s`) and the cursor moves
only past what the receiver accepted: at least once, the receiver dedupes on `seq`. One process per
deployment ships (it holds a lease of `lease_s`, default 30, renewed before each batch; it must exceed
`timeout_s`); the others stand by and take over within `lease_s` when it dies.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from keel.config.parts import Model


class SiemConfig(Model):
    url: str
    secret: str = Field(min_length=1)  # HMAC-SHA256 key for the x-keel-signature header
    batch: int = Field(100, ge=1, le=1000)  # entries per POST at most
    interval_s: float = Field(5.0, gt=0, le=3600)  # how often to look for new entries once caught up
    timeout_s: float = Field(10.0, gt=0, le=300)
    backoff_max_s: float = Field(60.0, gt=0, le=3600)
    lease_s: float = Field(30.0, gt=0, le=3600)  # one process ships: it holds this lease, renewed per batch

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")) or len(v) < 10:
            raise ValueError("must be an http:// or https:// URL, e.g. https://siem.example/keel")
        return v

    @model_validator(mode="after")
    def _lease_outlasts_a_post(self) -> SiemConfig:
        if self.lease_s <= self.timeout_s:
            raise ValueError(
                f"lease_s ({self.lease_s:g}) must exceed timeout_s ({self.timeout_s:g}): a POST still running when"
                f" the lease runs out could be sent again by the next shipper; raise lease_s (e.g. {self.timeout_s * 3:g})"
            )
        return self


class AuditConfig(Model):
    siem: SiemConfig | None = None
    tool_outcomes: Literal["durable", "fast"] = "durable"  # fast: no WAL-flush wait for tool.result (0062)
