"""Tenants' secrets: sealed with AES-256-GCM at rest, revealed only to the runtime injecting them into the
tool that declares them, and scrubbed from whatever a tool returns.

The master key comes from KEEL_MASTER_KEY (32 bytes as base64 or hex) or the file KEEL_MASTER_KEY_FILE
names. Each value is sealed with a fresh 96-bit nonce and the (tenant, name) pair as associated data, so a
sealed value copied to another tenant or name does not open. `rotate` re-seals every value under the new
key (the old ones still open what they sealed until then). No API returns a value after it is set.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from keel.audit.log import AuditLog
from keel.store.protocols.agents import AgentStore, SecretRow

MAX_SECRET = 16_384
MIN_SCRUB = 4  # shorter values would scrub ordinary text; they are still never shown by an API


class SecretError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class MasterKey:
    key: bytes

    @property
    def id(self) -> str:
        return hashlib.sha256(b"keel-master-key:" + self.key).hexdigest()[:12]

    @classmethod
    def parse(cls, text: str) -> MasterKey:
        text = text.strip()
        for decode in (bytes.fromhex, lambda t: base64.b64decode(t, validate=True), base64.urlsafe_b64decode):
            try:
                raw = decode(text)
            except (ValueError, binascii.Error):
                continue
            if len(raw) == 32:
                return cls(raw)
        raise SecretError("the master key must be 32 bytes as hex (64 characters) or base64: openssl rand -hex 32")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> MasterKey:
        if env.get("KEEL_MASTER_KEY"):
            return cls.parse(env["KEEL_MASTER_KEY"])
        path = env.get("KEEL_MASTER_KEY_FILE")
        if path:
            try:
                with open(path) as f:
                    return cls.parse(f.read())
            except OSError as exc:
                raise SecretError(f"KEEL_MASTER_KEY_FILE: cannot read {path}: {exc.strerror}") from None
        raise SecretError(
            "secrets need a master key: set KEEL_MASTER_KEY (openssl rand -hex 32) or KEEL_MASTER_KEY_FILE"
        )


def _aad(tenant: str, name: str) -> bytes:
    return f"keel-secret\x00{tenant}\x00{name}".encode()


def seal(key: MasterKey, tenant: str, name: str, value: str) -> str:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    return base64.b64encode(nonce + AESGCM(key.key).encrypt(nonce, value.encode(), _aad(tenant, name))).decode()


def unseal(key: MasterKey, tenant: str, name: str, sealed: str) -> str:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    raw = base64.b64decode(sealed)
    try:
        return AESGCM(key.key).decrypt(raw[:12], raw[12:], _aad(tenant, name)).decode()
    except InvalidTag:
        raise SecretError(f"secret '{name}' does not open with master key {key.id}: wrong key or altered") from None


class Vault:
    def __init__(self, store: AgentStore, key: MasterKey | None, audit: AuditLog | None = None) -> None:
        self._store = store
        self._key = key
        self._audit = audit

    def _need_key(self) -> MasterKey:
        if self._key is None:
            MasterKey.from_env({})  # raises the message naming the settings
        assert self._key is not None
        return self._key

    def put(self, tenant: str, name: str, value: str, *, actor: str, source_ip: str | None = None) -> SecretRow:
        if not isinstance(value, str) or not value or len(value) > MAX_SECRET or "\x00" in value:
            raise SecretError(f"a secret's value is 1 to {MAX_SECRET} characters, without NUL")
        key = self._need_key()
        row = SecretRow(tenant, name, seal(key, tenant, name, value), key.id, time.time())
        self._store.put_secret(row)
        if self._audit is not None:
            self._audit.append(actor, "secret.set", name, tenant=tenant, source_ip=source_ip)
        return row

    def reveal(self, tenant: str, name: str, *, tool: str, actor: str) -> str:
        """The value, for injection into `tool` only; every use is an audit entry."""
        row = self._store.get_secret(tenant, name)
        if row is None:
            raise SecretError(f"tool '{tool}' declares secret '{name}', which tenant '{tenant}' has not set")
        value = unseal(self._need_key(), tenant, name, row.sealed)
        if self._audit is not None:
            self._audit.append(actor, "secret.use", name, tenant=tenant, arguments={"tool": tool})
        return value

    def delete(self, tenant: str, name: str, *, actor: str) -> bool:
        gone = self._store.delete_secret(tenant, name)
        if gone and self._audit is not None:
            self._audit.append(actor, "secret.delete", name, tenant=tenant)
        return gone

    def rotate(self, old: Iterable[MasterKey], *, actor: str) -> int:
        """Re-seal every secret under this vault's key; `old` keys open what they sealed. The count."""
        key = self._need_key()
        keys = {k.id: k for k in (*old, key)}
        moved = 0
        for row in self._store.list_secrets():
            if row.key_id == key.id:
                continue
            opener = keys.get(row.key_id)
            if opener is None:
                raise SecretError(f"secret '{row.name}' of '{row.tenant}' is sealed with key {row.key_id}: pass it")
            value = unseal(opener, row.tenant, row.name, row.sealed)
            self._store.put_secret(
                SecretRow(row.tenant, row.name, seal(key, row.tenant, row.name, value), key.id, row.created_at)
            )
            moved += 1
        if self._audit is not None:
            self._audit.append(actor, "secret.rotate", key.id, result={"resealed": moved})
        return moved


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret (and its base64 and URL-quoted forms) replaced."""
    from urllib.parse import quote

    for value in sorted({s for s in secrets if len(s) >= MIN_SCRUB}, key=len, reverse=True):
        for form in {value, quote(value, safe=""), base64.b64encode(value.encode()).decode()}:
            text = text.replace(form, "[secret]")
    return text
