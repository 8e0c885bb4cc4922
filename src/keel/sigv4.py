"""AWS Signature Version 4 for one request: the headers that sign it. Pure, no I/O.

Shared by the S3 blob store (service `s3`) and the Bedrock provider (service `bedrock`), so it sits
in the bottom layer beside types and errors. `sign` takes the path as it goes on the wire (already
percent-encoded); S3 signs that path as it is, every other service escapes it once more
(`escape_path`), as AWS's signers do. The secret only ever enters the HMAC key.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import urllib.parse
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:  # a credential never reaches a log through its repr
        return f"Credentials(access_key_id={self.access_key_id!r}, secret_access_key=***)"


def sign(
    method: str,
    host: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
    *,
    service: str,
    region: str,
    credentials: Credentials,
    escape_path: bool = False,
    now: time.struct_time | None = None,
) -> dict[str, str]:
    """`headers` (lowercase names) plus host, x-amz-content-sha256, x-amz-date, the session token when
    there is one, and `authorization`. `query` is the canonical query string (sorted, encoded);
    `now` is UTC, for test vectors."""
    now = now or time.gmtime()
    amz_date, day = time.strftime("%Y%m%dT%H%M%SZ", now), time.strftime("%Y%m%d", now)
    payload = hashlib.sha256(body).hexdigest()
    signed = {**headers, "host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    if credentials.session_token:
        signed["x-amz-security-token"] = credentials.session_token
    names = sorted(signed)
    canonical = "\n".join(
        [
            method,
            urllib.parse.quote(path or "/", safe="/~") if escape_path else path or "/",
            query,
            "".join(f"{n}:{' '.join(signed[n].split())}\n" for n in names),
            ";".join(names),
            payload,
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = f"AWS4{credentials.secret_access_key}".encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    signed["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return signed
