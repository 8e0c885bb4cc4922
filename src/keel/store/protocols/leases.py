"""Named leases with an expiry: one holder of a name at a time, across every process sharing the store.

A holder acquires a name for `ttl_s`, renews it before it runs out, and releases it when it stops. A lease
nobody renewed is free once it expires, so a killed holder's work moves to another process after at most
`ttl_s`. `token` grows each time the lease changes hands: a holder that finds a different token (or none)
has lost the lease and must stop acting under it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Lease:
    name: str
    holder: str
    token: int
    expires_at: float


class LeaseStore(Protocol):
    def acquire_lease(self, name: str, holder: str, ttl_s: float, now: float) -> Lease | None:
        """Take `name` for `ttl_s` if it is free (no row, or expired) or `holder` holds it already (then
        this renews it); None while another holder's lease runs."""
        ...

    def renew_lease(self, lease: Lease, ttl_s: float, now: float) -> Lease | None:
        """Extend `lease` to now + ttl_s if it is still this holder's under the same token (even past its
        expiry, if nobody took it since); None if it changed hands."""
        ...

    def release_lease(self, lease: Lease) -> bool:
        """Free `lease` now if it is still this holder's; whether it was."""
        ...

    def get_lease(self, name: str) -> Lease | None:
        """The lease row of `name` as it is (possibly expired: a released lease expires at 0); None if never taken."""
        ...
