"""What a handler raises to say how its attempt ended, beside a plain exception (retried)."""

from __future__ import annotations


class Permanent(Exception):
    """This attempt failed and no retry can help: the job goes dead at once."""


class Cancelled(Exception):
    """The handler saw `ctx.cancelled` and stopped: the job ends cancelled."""


class LeaseLost(Exception):
    """Raised into a handler (from `ctx.progress`/`ctx.heartbeat`) when its lease is gone: the job is
    back in the queue and another worker may run it, so this attempt must stop writing."""
