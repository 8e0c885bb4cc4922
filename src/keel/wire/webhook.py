"""Keel's outgoing webhooks' signature (alerts, approvals, async calls, the audit log's SIEM stream).

`x-keel-signature: sha256=<hex HMAC-SHA256 of f"{timestamp}.{raw body}">`, keyed with the receiver's secret,
beside `x-keel-timestamp` (unix seconds of the attempt): one scheme, so a receiver checks every event alike.
"""

from __future__ import annotations

import hashlib
import hmac


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The `x-keel-signature` value for one attempt."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"
