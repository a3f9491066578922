"""``[[notify]]`` tables of ``orchestra.toml``: where notifications go (operator only;
a client never chooses a URL or a secret).

Secrets may be written inline or as ``{ from_env = "VAR" }`` (kept in the server's
environment, as agents' env values are); references are resolved once at start-up
by :func:`resolve_targets`, so a missing variable stops the server with a message
instead of sending unsigned requests.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from orchestra.domain.errors import InvalidInput
from orchestra.domain.events import NotificationKind

DEFAULT_EVENTS = (NotificationKind.CHECKPOINT_PENDING, NotificationKind.WORKFLOW_FAILED)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class SecretFromEnv(BaseModel):
    """``{ from_env = "VAR" }``: the secret is the server's variable ``VAR``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    from_env: str = Field(pattern=_ENV_NAME.pattern)


class NotifyTarget(BaseModel):
    """One ``[[notify]]`` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_TARGET_NAME.pattern)
    url: str
    events: list[NotificationKind] = Field(default_factory=lambda: list(DEFAULT_EVENTS))
    format: Literal["json", "slack"] = "json"
    #: Signs every request (``X-Orchestra-Signature``); required for ``json``, where
    #: the receiver has no other way to tell Orchestra from anyone else.
    secret: str | SecretFromEnv | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    max_attempts: int = Field(default=8, ge=1, le=100)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return url

    @field_validator("events")
    @classmethod
    def _some_events(cls, events: list[NotificationKind]) -> list[NotificationKind]:
        if not events:
            raise ValueError("must name at least one event")
        return list(dict.fromkeys(events))

    @model_validator(mode="after")
    def _signed_json(self) -> NotifyTarget:
        if self.format == "json" and (self.secret is None or self.secret == ""):
            raise ValueError(
                'a json target needs a secret (a string or { from_env = "VAR" }) to sign '
                "its requests"
            )
        return self


def check_unique_names(targets: Sequence[NotifyTarget]) -> None:
    """Two targets with one name would share their outbox rows: refused."""
    seen: set[str] = set()
    for target in targets:
        if target.name in seen:
            raise ValueError(f"two [[notify]] tables are named {target.name!r}")
        seen.add(target.name)


@dataclass(frozen=True)
class Target:
    """A target ready to deliver to: its secret resolved."""

    name: str
    url: str
    events: frozenset[NotificationKind]
    format: Literal["json", "slack"]
    secret: bytes | None
    timeout_s: float
    max_attempts: int


def resolve_targets(
    targets: Sequence[NotifyTarget], environ: Mapping[str, str] | None = None
) -> list[Target]:
    """The targets with their secrets looked up; :class:`InvalidInput` naming the
    target and the variable when a referenced variable is not set."""
    env = os.environ if environ is None else environ
    resolved: list[Target] = []
    for t in targets:
        secret: str | None
        if isinstance(t.secret, SecretFromEnv):
            secret = env.get(t.secret.from_env)
            if not secret:
                raise InvalidInput(
                    f"notify target {t.name!r}: its secret comes from the variable "
                    f"{t.secret.from_env}, which is not set (or empty) where Orchestra runs",
                    details={"field": "notify"},
                )
        else:
            secret = t.secret
        resolved.append(
            Target(
                name=t.name,
                url=t.url,
                events=frozenset(t.events),
                format=t.format,
                secret=secret.encode() if secret else None,
                timeout_s=t.timeout_s,
                max_attempts=t.max_attempts,
            )
        )
    return resolved
