"""API tokens: created once in plaintext, stored as a sha256 hash, revocable.

The plaintext is returned by :func:`create_token` and never stored, so a leaked
database does not leak credentials. Authentication is one indexed read; the
``last_used_at`` column is refreshed at most once per :data:`TOUCH_EVERY`, so a
busy client does not turn every read request into a write.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, select, update

from orchestra.domain.errors import InvalidInput, NotFound
from orchestra.domain.models import Model
from orchestra.domain.roles import Role
from orchestra.store.db import Database, Tx, utcnow
from orchestra.store.schema import api_tokens

TOKEN_PREFIX = "orc_"
TOUCH_EVERY = timedelta(seconds=60)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$")


class TokenInfo(Model):
    """What is known about a token (never the token itself)."""

    id: str
    name: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        choices = ", ".join(r.value for r in Role)
        raise InvalidInput(
            f"unknown role {role!r}; choose one of: {choices}", details={"field": "role"}
        ) from None


async def create_token(db: Database, *, name: str, role: Role) -> str:
    """Store a new token and return its plaintext (shown once)."""
    if not _NAME.match(name):
        raise InvalidInput(
            "token name must be 1–128 characters: letters, digits and _ . @ : - "
            "(starting with a letter or digit)",
            details={"field": "name"},
        )
    checked = _role(role)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)

    def txn(tx: Tx) -> None:
        taken = tx.conn.execute(select(api_tokens.c.id).where(api_tokens.c.name == name)).first()
        if taken is not None:
            raise InvalidInput(
                f"a token named {name!r} already exists (names stay taken after revocation)",
                details={"field": "name"},
            )
        tx.conn.execute(
            insert(api_tokens).values(
                id=uuid.uuid4().hex,
                name=name,
                role=checked.value,
                token_hash=hash_token(token),
                created_at=tx.now,
            )
        )

    await db.write(txn)
    return token


async def list_tokens(db: Database) -> list[TokenInfo]:
    def read(conn: Connection) -> list[TokenInfo]:
        rows = conn.execute(select(api_tokens).order_by(api_tokens.c.created_at, api_tokens.c.name))
        return [token_info(r._mapping) for r in rows]

    return await db.read(read)


async def revoke_token(db: Database, name: str) -> None:
    """Revoke the named token (revoking it again changes nothing)."""

    def txn(tx: Tx) -> None:
        found = tx.conn.execute(select(api_tokens.c.id).where(api_tokens.c.name == name)).first()
        if found is None:
            raise NotFound(f"no token named {name!r}")
        tx.conn.execute(
            update(api_tokens)
            .where(api_tokens.c.name == name, api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=tx.now)
        )

    await db.write(txn)


async def authenticate_token(db: Database, token: str) -> TokenInfo | None:
    """The token's holder, or None when the token is unknown or revoked."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    digest = hash_token(token)

    def read(conn: Connection) -> TokenInfo | None:
        row = conn.execute(select(api_tokens).where(api_tokens.c.token_hash == digest)).first()
        return token_info(row._mapping) if row is not None else None

    info = await db.read(read)
    if info is None or info.revoked:
        return None
    await touch(db, info)
    return info


async def touch(db: Database, info: TokenInfo) -> None:
    """Record a use of the token (a write at most once per :data:`TOUCH_EVERY`)."""
    if info.last_used_at is None or utcnow() - info.last_used_at >= TOUCH_EVERY:
        await db.write(lambda tx: _touch_txn(tx, info.id))


def _touch_txn(tx: Tx, token_id: str) -> None:
    tx.conn.execute(
        update(api_tokens).where(api_tokens.c.id == token_id).values(last_used_at=tx.now)
    )


def token_info(row: Mapping[Any, Any]) -> TokenInfo:
    """A :class:`TokenInfo` from a row holding the ``api_tokens`` columns."""
    return TokenInfo.model_validate({k: row[k] for k in TokenInfo.model_fields})
