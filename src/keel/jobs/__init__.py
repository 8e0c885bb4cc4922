"""Durable background work: a queue in the store, workers that claim jobs under leases.

`JobQueue` (queue.py) enqueues and inspects jobs from async code; `JobPool` (pool.py) runs the
handlers that capabilities register through their builder's `Contribution.jobs`; builder.py wires both
into the runtime. Execution is at least once: see the store protocol (keel.store.protocols.jobs).
"""

from keel.jobs.errors import Cancelled, LeaseLost, Permanent
from keel.jobs.queue import JobQueue
from keel.jobs.registry import JobRegistry

__all__ = ["Cancelled", "JobQueue", "JobRegistry", "LeaseLost", "Permanent"]
