"""Blobs in an S3-compatible bucket (s3://bucket/prefix): AWS S3, MinIO, Ceph, R2, ...

A small client over the standard library: four calls (PUT and GET object, DeleteObjects in
batches of 1,000, ListObjectsV2) signed with AWS Signature Version 4, so no SDK is needed. With an
`endpoint` requests go path-style (endpoint/bucket/key, what MinIO and most self-hosted servers
expect); without one, to AWS's virtual-hosted bucket.s3.region.amazonaws.com. Credentials are
only ever placed in the signature: errors name the call, the status and S3's error code.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from keel.sigv4 import Credentials, sign
from keel.store.blobs.fs import check_key

_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_DELETE_BATCH = 1000  # the most keys one DeleteObjects call takes
_TIMEOUT_S = 30.0


class S3Error(RuntimeError):
    """An S3 call failed: the operation, HTTP status and S3's error code (never a credential)."""


class S3Blobs:
    def __init__(
        self,
        url: str,
        *,
        endpoint: str | None,
        region: str,
        access_key_id: str,
        secret_access_key: str,
    ) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"not an S3 URL: {url!r} (use s3://bucket/prefix)")
        self.url = url
        self._bucket = parsed.netloc
        self._prefix = parsed.path.strip("/") + "/" if parsed.path.strip("/") else ""
        self._region = region
        self._access = access_key_id
        self._secret = secret_access_key
        if endpoint:
            self._base = f"{endpoint.rstrip('/')}/{self._bucket}"
        else:
            self._base = f"https://{self._bucket}.s3.{region}.amazonaws.com"

    # ---- the four calls

    def put(self, key: str, data: bytes) -> None:
        headers = {"content-type": "application/octet-stream"}
        self._call("PUT", self._object(key), body=data, headers=headers, what=f"PUT {key}")

    def get(self, key: str) -> bytes | None:
        try:
            return self._call("GET", self._object(key), what=f"GET {key}")
        except urllib.error.HTTPError as exc:  # only a 404 reaches here (see _call)
            exc.close()
            return None

    def delete(self, keys: Sequence[str]) -> int:
        for i in range(0, len(keys), _DELETE_BATCH):
            batch = keys[i : i + _DELETE_BATCH]
            objects = "".join(f"<Object><Key>{escape(self._prefix + check_key(k))}</Key></Object>" for k in batch)
            body = f"<Delete><Quiet>true</Quiet>{objects}</Delete>".encode()
            md5 = base64.b64encode(hashlib.md5(body).digest()).decode()  # required by DeleteObjects
            reply = self._call(
                "POST",
                "",
                {"delete": ""},
                body,
                {"content-md5": md5, "content-type": "application/xml"},
                what="DeleteObjects",
            )
            errors = ElementTree.fromstring(reply).findall(f"{_NS}Error") if reply else []
            if errors:
                code = errors[0].findtext(f"{_NS}Code")
                raise S3Error(f"DeleteObjects: {len(errors)} of {len(batch)} keys not deleted ({code})")
        return len(keys)

    def list(self, prefix: str = "") -> Iterator[tuple[str, float]]:
        token: str | None = None
        while True:
            query = {"list-type": "2", "prefix": self._prefix + prefix}
            if token:
                query["continuation-token"] = token
            root = ElementTree.fromstring(self._call("GET", "", query, what="ListObjectsV2"))
            for item in root.findall(f"{_NS}Contents"):
                key = item.findtext(f"{_NS}Key") or ""
                modified = item.findtext(f"{_NS}LastModified") or ""
                yield key.removeprefix(self._prefix), _timestamp(modified)
            token = root.findtext(f"{_NS}NextContinuationToken")
            if root.findtext(f"{_NS}IsTruncated") != "true" or not token:
                return

    def close(self) -> None:
        return None

    # ---- signing and transport

    def _object(self, key: str) -> str:
        return "/" + urllib.parse.quote(self._prefix + check_key(key), safe="-_.~/")

    def _call(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        what: str,
    ) -> bytes:
        """One signed request; its body. A 404 on GET is raised as HTTPError for `get` to answer None."""
        url = self._base + path
        canonical_query = "&".join(
            f"{_quote(k)}={_quote(v)}" for k, v in sorted((query or {}).items())
        )  # fmt: skip
        if canonical_query:
            url += "?" + canonical_query
        signed = self._sign(method, url, canonical_query, body, dict(headers or {}))
        request = urllib.request.Request(url, data=body if method in ("PUT", "POST") else None, method=method)
        for name, value in signed.items():
            request.add_header(name, value)  # an explicit content-type: urllib's default form type gets parsed
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and method == "GET" and path:
                raise
            detail = exc.read()
            exc.close()
            code = ElementTree.fromstring(detail).findtext("Code") if detail.startswith(b"<") else None
            raise S3Error(f"S3 {what} failed: HTTP {exc.code}{f' ({code})' if code else ''}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise S3Error(f"S3 {what} failed: cannot reach {self._base} ({exc})") from None

    def _sign(
        self,
        method: str,
        url: str,
        canonical_query: str,
        body: bytes,
        headers: dict[str, str],
        now: time.struct_time | None = None,
    ) -> dict[str, str]:
        """AWS Signature Version 4 headers for one request (`now`: UTC, for test vectors)."""
        parts = urllib.parse.urlsplit(url)
        creds = Credentials(self._access, self._secret)
        headers = sign(
            method, parts.netloc, parts.path, canonical_query, headers, body,
            service="s3", region=self._region, credentials=creds, now=now,
        )  # fmt: skip
        del headers["host"]  # urllib sets it, from the same URL
        return headers


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="-_.~")


def _timestamp(iso: str) -> float:
    """S3's LastModified (2024-05-01T12:00:00.000Z) as unix seconds."""
    if not iso:
        return 0.0
    return float(calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S")))
