"""The blob store contract on both backends: a directory, and a real S3-compatible HTTP server (moto).

The S3 client is Keel's own (SigV4 over the standard library): its signature is checked against the
AWS documentation's published example, and what it writes is read back with boto3, an independent
client, so the objects are real S3 objects and not something only Keel understands.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keel.store.blobs.s3 import S3Blobs
from keel.store.open import open_blobs
from keel.store.protocols import BlobStore

S3_KEYS = {"access_key_id": "testing-access", "secret_access_key": "testing-secret-DO-NOT-LOG"}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1, speaking the S3 HTTP API."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def make_bucket(endpoint: str) -> str:

    bucket = "keel-" + secrets.token_hex(4)
    boto3_client(endpoint).create_bucket(Bucket=bucket)
    return bucket


def boto3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_KEYS["access_key_id"],
        aws_secret_access_key=S3_KEYS["secret_access_key"],
    )


@pytest.fixture(params=["file", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "file":
        store = open_blobs(f"file://{tmp_path}/blobs")
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        store = open_blobs(f"s3://{make_bucket(endpoint)}/keel/traces", endpoint=endpoint, **S3_KEYS)
    yield store
    store.close()


def test_put_get_replace_and_missing(blobs: BlobStore) -> None:
    blobs.put("traces/2024-05-01/abc.json", b'{"a": 1}')
    assert blobs.get("traces/2024-05-01/abc.json") == b'{"a": 1}'
    blobs.put("traces/2024-05-01/abc.json", b"x" * 200_000)  # replaced, and large
    assert blobs.get("traces/2024-05-01/abc.json") == b"x" * 200_000
    assert blobs.get("traces/2024-05-01/nope.json") is None


def test_list_by_prefix_with_times_and_delete(blobs: BlobStore) -> None:
    before = time.time() - 5
    keys = [f"traces/2024-05-0{d}/t{i}.json" for d in (1, 2) for i in range(3)]
    for k in keys:
        blobs.put(k, k.encode())
    blobs.put("other/x.json", b"x")
    listed = dict(blobs.list("traces/"))
    assert sorted(listed) == sorted(keys)
    assert all(before <= t <= time.time() + 5 for t in listed.values())
    assert sorted(k for k, _ in blobs.list("traces/2024-05-02/")) == keys[3:]
    assert blobs.delete(keys[:4]) >= 4
    assert sorted(k for k, _ in blobs.list("traces/")) == keys[4:]
    assert blobs.get(keys[0]) is None and blobs.get(keys[5]) == keys[5].encode()
    assert sorted(k for k, _ in blobs.list()) == sorted([*keys[4:], "other/x.json"])


def test_a_key_cannot_leave_its_root(blobs: BlobStore) -> None:
    for bad in ("../escape.json", "/etc/passwd", "a//b", "traces/../../x", ""):
        with pytest.raises(ValueError, match="invalid blob key"):
            blobs.put(bad, b"x")


def test_s3_listing_pages_past_a_thousand_keys_and_deletes_in_batches(s3_endpoint: str) -> None:
    store = open_blobs(f"s3://{make_bucket(s3_endpoint)}", endpoint=s3_endpoint, **S3_KEYS)
    keys = [f"traces/d/{i:05d}.json" for i in range(1203)]
    for k in keys:
        store.put(k, b"1")
    assert sorted(k for k, _ in store.list("traces/")) == keys  # two pages of ListObjectsV2
    store.delete(keys)  # two DeleteObjects calls
    assert list(store.list("traces/")) == []


def test_s3_objects_are_real_s3_objects_under_the_prefix(s3_endpoint: str) -> None:
    bucket = make_bucket(s3_endpoint)
    store = open_blobs(f"s3://{bucket}/keel", endpoint=s3_endpoint, **S3_KEYS)
    store.put("traces/2024-05-01/ab-1.json", b'{"request": 1}')
    client = boto3_client(s3_endpoint)
    body = client.get_object(Bucket=bucket, Key="keel/traces/2024-05-01/ab-1.json")["Body"].read()
    assert body == b'{"request": 1}'
    client.put_object(Bucket=bucket, Key="keel/traces/2024-05-02/cd-2.json", Body=b"from boto3")
    assert store.get("traces/2024-05-02/cd-2.json") == b"from boto3"


def test_s3_signature_matches_the_aws_documentation_example() -> None:
    """AWS S3 docs, "Signature Calculations for the Authorization Header", example GET Object."""
    store = S3Blobs(
        "s3://examplebucket",
        endpoint=None,
        region="us-east-1",
        access_key_id="AKIAIOSFODNN7EXAMPLE",
        secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    )
    at = time.strptime("20130524T000000Z", "%Y%m%dT%H%M%SZ")
    url = "https://examplebucket.s3.amazonaws.com/test.txt"
    headers = store._sign("GET", url, "", b"", {"range": "bytes=0-9"}, at)
    assert headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
        " SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
        " Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


def test_s3_errors_name_the_call_and_never_the_secret(s3_endpoint: str) -> None:
    store = open_blobs("s3://no-such-bucket-keel/x", endpoint=s3_endpoint, **S3_KEYS)
    with pytest.raises(RuntimeError) as info:
        store.put("traces/a.json", b"x")
    assert "PUT traces/a.json" in str(info.value) and "404" in str(info.value)
    assert S3_KEYS["secret_access_key"] not in str(info.value)
