"""The AWS event-stream binary framing (application/vnd.amazon.eventstream), decoded. Pure, no I/O.

A message is: a 12-byte prelude (total length, headers length, both big-endian uint32, then the
CRC32 of those 8 bytes), the headers, the payload, and the CRC32 of everything before it. A header
is a 1-byte name length, the name, a 1-byte type and its value (strings and byte arrays carry a
2-byte length). Bedrock's ConverseStream sends each event as one message whose `:event-type`
header names it and whose payload is JSON.

`Frames.feed` takes body bytes as they arrive, split anywhere, and returns the complete messages;
a wrong CRC or an impossible length is a protocol error (the stream cannot be re-synchronised).
"""

from __future__ import annotations

import struct
from binascii import crc32
from dataclasses import dataclass

from keel.errors import ErrorKind, ProviderError

PRELUDE = 12
MAX_HEADERS = 128 * 1024  # the limits botocore enforces
MAX_PAYLOAD = 24 * 1024 * 1024

HeaderValue = str | int | bool | bytes


@dataclass(frozen=True, slots=True)
class Message:
    headers: dict[str, HeaderValue]
    payload: bytes


def _protocol(message: str) -> ProviderError:
    return ProviderError(ErrorKind.protocol, f"AWS event stream: {message}")


class Frames:
    """Cuts a byte stream into whole, CRC-checked messages."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an unfinished message: non-zero when the body ends means it was cut."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while len(self._buf) >= PRELUDE:
            total, headers_len, prelude_crc = struct.unpack_from("!III", self._buf)
            if crc32(self._buf[:8]) & 0xFFFFFFFF != prelude_crc:
                raise _protocol("prelude CRC mismatch")
            if headers_len > MAX_HEADERS or not PRELUDE + headers_len + 4 <= total <= MAX_HEADERS + MAX_PAYLOAD:
                raise _protocol(f"impossible lengths (total {total}, headers {headers_len})")
            if len(self._buf) < total:
                break
            (message_crc,) = struct.unpack_from("!I", self._buf, total - 4)
            if crc32(self._buf[: total - 4]) & 0xFFFFFFFF != message_crc:
                raise _protocol("message CRC mismatch")
            out.append(bytes(self._buf[:total]))
            del self._buf[:total]
        return out


# header type -> (struct format, size) for the fixed-size types; 0/1 are true/false with no value
_FIXED = {2: ("!b", 1), 3: ("!h", 2), 4: ("!i", 4), 5: ("!q", 8), 8: ("!q", 8)}


def parse(message: bytes) -> Message:
    """A whole message (as `Frames.feed` returns it) into its headers and payload."""
    _, headers_len, _ = struct.unpack_from("!III", message)
    end = PRELUDE + headers_len
    headers: dict[str, HeaderValue] = {}
    at = PRELUDE
    try:
        while at < end:
            size = message[at]
            name = message[at + 1 : at + 1 + size].decode()
            at += 1 + size
            kind = message[at]
            at += 1
            value: HeaderValue
            if kind in (0, 1):
                value = kind == 0
            elif kind in _FIXED:
                fmt, width = _FIXED[kind]
                (value,) = struct.unpack_from(fmt, message, at)
                at += width
            elif kind in (6, 7):
                (length,) = struct.unpack_from("!H", message, at)
                raw = message[at + 2 : at + 2 + length]
                value = raw.decode() if kind == 7 else bytes(raw)
                at += 2 + length
            elif kind == 9:
                value = bytes(message[at : at + 16])
                at += 16
            else:
                raise _protocol(f"unknown header type {kind}")
            headers[name] = value
    except (IndexError, struct.error, UnicodeDecodeError):
        raise _protocol("malformed headers") from None
    if at != end:
        raise _protocol("headers overrun their length")
    return Message(headers, bytes(message[end:-4]))
