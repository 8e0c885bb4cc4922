"""Signed approval links: an approver acts on a pending tool call from a link in a webhook, without the
admin token.

A link is `/api/approvals/{call_id}/{approve|deny}?exp=UNIX&sig=HEX`, where sig is HMAC-SHA256 over
"call_id|action|exp" under a key derived from the admin token (only the gateways know it; rotating the
token voids every link out). It expires with the approval itself (`exp` = the call's `expires_at`), and it
is single-use because a decision is one conditional move pending -> approved | denied: a second use, or a
use after another decision, changes nothing (409). Opening the link (GET) only shows what it would do;
the decision is a POST from that page, so link previewers in chat tools cannot approve anything.

When a call needs approval, the process that proposed it posts `approval.requested` to the alerts
webhook (`alerts.webhook`, else `limits.webhook`), signed like every Keel webhook, with both links.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import urlencode

import orjson

from keel.audit.log import redact
from keel.store.protocols.agents import CallRow

ACTIONS = ("approve", "deny")


class Links:
    def __init__(self, admin_token: str, base_url: str | None) -> None:
        self._key = hmac.new(admin_token.encode(), b"keel approval links v1", hashlib.sha256).digest()
        self._base = (base_url or "").rstrip("/")

    def _sig(self, call_id: str, action: str, exp: int) -> str:
        return hmac.new(self._key, f"{call_id}|{action}|{exp}".encode(), hashlib.sha256).hexdigest()

    def url(self, call_id: str, action: str, exp: float) -> str:
        """The link (absolute when a public URL is configured, else a path on the gateway)."""
        e = int(exp)
        query = urlencode({"exp": e, "sig": self._sig(call_id, action, e)})
        return f"{self._base}/api/approvals/{call_id}/{action}?{query}"

    def check(self, call_id: str, action: str, sig: str, exp: str, now: float) -> str | None:
        """None when the link is genuine and unexpired; else why not."""
        if action not in ACTIONS or not (exp.isascii() and exp.isdigit()) or len(exp) > 12:  # '¹'.isdigit() too
            return "the link is malformed"
        if not hmac.compare_digest(self._sig(call_id, action, int(exp)).encode(), sig.encode()):  # sig: any text
            return "the link's signature does not match"
        if int(exp) <= now:
            return "the link has expired"
        return None


@dataclass(frozen=True, slots=True)
class ApprovalRequested:
    """The webhook event of a call waiting for a person (`keel.alerts.sender.Decided`)."""

    call: CallRow
    approve_url: str
    deny_url: str

    @property
    def id(self) -> str:
        return hashlib.sha256(f"approval|{self.call.id}".encode()).hexdigest()

    def describe(self) -> str:
        return f"approval of {self.call.tool} ({self.call.id})"

    def body(self) -> bytes:
        c = self.call
        return orjson.dumps({
            "event": "approval.requested", "id": self.id, "call_id": c.id, "run_id": c.run_id, "tenant": c.tenant,
            "tool": c.tool, "arguments": redact(c.arguments), "expires_at": c.expires_at,
            "approve_url": self.approve_url, "deny_url": self.deny_url,
        })  # fmt: skip
