"""Building blocks more than one section uses: the strict frozen model every section derives from, a
webhook endpoint (limits and alerts both send to one), and the `Outline` checks consult beside their
typed section. Sections import this module, never each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    """Unknown keys are refused; a parsed config never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class WebhookConfig(Model):
    url: str
    secret: str  # HMAC-SHA256 key for the x-keel-signature header
    timeout_s: float = Field(5.0, gt=0)
    retries: int = Field(5, ge=0)


@dataclass(frozen=True, slots=True)
class Outline:
    """What the file says that its typed sections cannot: the provider and alias names it declares, the
    keys (`section` or `section.key`) it sets to a non-empty value, and, when the schema rejected part
    of it, the paths of the rejected values the checks see as their field's default. A check consults it
    so that a part set but malformed is reported once, by the schema, never also as missing or as its
    default."""

    providers: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    given: frozenset[str] = frozenset()
    rejected: frozenset[str] = frozenset()

    @classmethod
    def of(cls, raw: Mapping[str, Any], rejected: frozenset[str] = frozenset()) -> Outline:
        """The outline of an expanded file's mapping."""
        given = {str(k) for k, v in raw.items() if v}
        given |= {f"{k}.{k2}" for k, v in raw.items() if isinstance(v, dict) for k2, v2 in v.items() if v2}
        providers, models = raw.get("providers"), raw.get("models")
        return cls(
            providers=tuple(map(str, providers)) if isinstance(providers, dict) else (),
            aliases=tuple(map(str, models)) if isinstance(models, dict) else (),
            given=frozenset(given),
            rejected=rejected,
        )
