"""The AWS event-stream decoder and the SigV4 signer, against botocore (an independent implementation):
its published test vectors, its parser reading the fake upstream's frames, its signer's signatures."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from botocore.eventstream import EventStreamBuffer

from keel.errors import ErrorKind, ProviderError
from keel.sigv4 import Credentials, sign
from keel.testing.fake_cloud import check_aws_auth, eventstream_message
from keel.wire.aws_eventstream import Frames, parse

# botocore's tests/unit/test_eventstream.py vectors: (bytes, headers, payload)
EMPTY = (b"\x00\x00\x00\x10\x00\x00\x00\x00\x05\xc2H\xeb}\x98\xc8\xff", {}, b"")
INT8 = (b"\x00\x00\x00\x17\x00\x00\x00\x07)\x86\x01X\x04byte\x02\xff\xc2\xf8i\xdc", {"byte": -1}, b"")
INT32 = (
    b"\x00\x00\x00\x1d\x00\x00\x00\r\x83\xe3\xf0\xe7\x07integer\x04\xff\xff\xff\xff\x8b\x8e\x12\xeb",
    {"integer": -1},
    b"",
)
PAYLOAD = (b"\x00\x00\x00\x1d\x00\x00\x00\x00\xfdR\x8cZ{'foo':'bar'}\xc3e96", {}, b"{'foo':'bar'}")


@pytest.mark.parametrize("vector", [EMPTY, INT8, INT32, PAYLOAD], ids=["empty", "int8", "int32", "payload"])
def test_botocore_vectors_decode(vector: tuple[bytes, dict[str, Any], bytes]) -> None:
    data, headers, payload = vector
    messages = Frames().feed(data)
    assert len(messages) == 1
    message = parse(messages[0])
    assert (message.headers, message.payload) == (headers, payload)


def test_messages_split_anywhere_come_out_whole() -> None:
    one = eventstream_message({":event-type": "messageStart", ":message-type": "event"}, b'{"role":"assistant"}')
    two = eventstream_message({":event-type": "messageStop", ":message-type": "event"}, b'{"stopReason":"end_turn"}')
    stream = one + two + PAYLOAD[0]
    for step in (1, 3, 7, len(stream)):
        frames, out = Frames(), []
        for i in range(0, len(stream), step):
            out += frames.feed(stream[i : i + step])
        assert out == [one, two, PAYLOAD[0]] and frames.pending == 0
    assert parse(two).headers == {":event-type": "messageStop", ":message-type": "event"}


def test_the_fakes_frames_read_back_with_botocore() -> None:
    headers = {":event-type": "contentBlockDelta", ":content-type": "application/json", ":message-type": "event"}
    data = eventstream_message(headers, b'{"delta":{"text":"hi"}}')
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    message = next(iter(buffer))
    assert (message.headers, message.payload) == (headers, b'{"delta":{"text":"hi"}}')


@pytest.mark.parametrize(("at", "what"), [(9, "prelude CRC"), (20, "message CRC"), (-1, "message CRC")])
def test_a_corrupt_byte_is_a_protocol_error(at: int, what: str) -> None:
    data = bytearray(eventstream_message({":event-type": "x"}, b'{"a":1}'))
    data[at] ^= 0xFF
    with pytest.raises(ProviderError) as info:
        Frames().feed(bytes(data))
    assert info.value.error_kind is ErrorKind.protocol and what in info.value.message


def test_an_impossible_length_is_refused_before_buffering() -> None:
    prelude = (2**31).to_bytes(4, "big") + (0).to_bytes(4, "big")
    import zlib

    data = prelude + zlib.crc32(prelude).to_bytes(4, "big")
    with pytest.raises(ProviderError, match="impossible lengths"):
        Frames().feed(data)


# ---- SigV4 ------------------------------------------------------------------------------------

CREDS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")


@pytest.mark.parametrize("token", [None, "session-token-example"])
def test_bedrock_signature_matches_botocore(token: str | None) -> None:
    """A Converse call for a model id with ':' (sent as %3A; the canonical path escapes it again)."""
    creds = Credentials(CREDS.access_key_id, CREDS.secret_access_key, token)
    host, path, body = (
        "bedrock-runtime.us-east-1.amazonaws.com",
        "/model/amazon.nova-pro-v1%3A0/converse",
        b'{"messages":[]}',
    )
    request = AWSRequest("POST", f"https://{host}{path}", data=body, headers={"content-type": "application/json"})
    boto = SigV4Auth(BotoCredentials(creds.access_key_id, creds.secret_access_key, token), "bedrock", "us-east-1")
    request.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()  # Keel signs the payload hash too
    boto.add_auth(request)
    at = time.strptime(request.context["timestamp"], "%Y%m%dT%H%M%SZ")
    ours = sign(
        "POST", host, path, "", {"content-type": "application/json"}, body,
        service="bedrock", region="us-east-1", credentials=creds, escape_path=True, now=at,
    )  # fmt: skip
    signature = request.headers["Authorization"].rpartition("Signature=")[2]
    assert ours["authorization"].rpartition("Signature=")[2] == signature
    assert "%253A0" in boto.canonical_request(request)  # escaped twice, as AWS expects for every service but S3
    assert ("x-amz-security-token" in ours) == (token is not None)


def test_the_fake_accepts_keels_signature_and_refuses_a_changed_body() -> None:
    secret_keys = {"AKIDFAKEKEELTESTING1": "fake+secret/keel/testing/not-a-real-key"}
    creds = Credentials(*next(iter(secret_keys.items())))
    path, body = "/model/m%3A0/converse", b'{"messages": []}'
    headers = sign(
        "POST", "127.0.0.1:9", path, "", {"content-type": "application/json"}, body,
        service="bedrock", region="eu-west-1", credentials=creds, escape_path=True,
    )  # fmt: skip
    assert check_aws_auth("POST", path, headers, body, time.time()) is None
    assert "does not match" in (check_aws_auth("POST", path, headers, body + b" ", time.time()) or "")
    assert "expired" in (check_aws_auth("POST", path, headers, body, time.time() + 3600) or "")
