"""`storage:` (control data and traces: SQLite or PostgreSQL) and `redis:` (state shared across processes)."""

from __future__ import annotations

from pydantic import field_validator

from keel.config.parts import Model


class StorageConfig(Model):
    url: str = "sqlite:///keel.db"

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not v.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:///, postgresql:// or postgres://")
        return v


class RedisConfig(Model):
    url: str | None = None  # redis://host:6379/0 — shared breaker state across processes

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v
