"""Web sessions: a browser login is a server-side row, never the API token in a cookie.

The login page checks an API token once and opens a session: a random secret
goes into the browser's cookie, its sha256 is the row's id (a leaked database
holds no usable secret). Each session has its own CSRF token and an expiry.
A session is valid while it has not ended (logout), has not expired, and its
token has not been revoked: one read by primary key, joined to the token.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, insert, select, update

from orchestra.store.db import Database, Tx, utcnow
from orchestra.store.schema import api_tokens, web_sessions
from orchestra.store.tokens import TokenInfo, hash_token, token_info, touch

#: Longer than any secret :func:`open_session` makes; longer values are not looked up.
MAX_SECRET_LEN = 200


@dataclass(frozen=True)
class WebSession:
    """A live session (never its secret)."""

    id: str
    token: TokenInfo
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True)
class OpenedSession:
    """What the login page hands to the browser: the cookie's secret and the CSRF token."""

    secret: str
    csrf_token: str
    expires_at: datetime


async def open_session(db: Database, token_id: str, ttl_s: float) -> OpenedSession:
    """Start a session for the token; sessions that have expired or ended are swept."""
    secret = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)

    def txn(tx: Tx) -> datetime:
        expires = tx.now + timedelta(seconds=ttl_s)
        tx.conn.execute(
            delete(web_sessions).where(
                (web_sessions.c.expires_at < tx.now) | web_sessions.c.ended_at.is_not(None)
            )
        )
        tx.conn.execute(
            insert(web_sessions).values(
                id=hash_token(secret),
                token_id=token_id,
                csrf_token=csrf,
                created_at=tx.now,
                expires_at=expires,
            )
        )
        return expires

    expires_at = await db.write(txn)
    return OpenedSession(secret, csrf, expires_at)


async def find_session(db: Database, secret: str) -> WebSession | None:
    """The live session of a cookie's secret, else None (unknown, ended, expired, revoked)."""
    if not secret or len(secret) > MAX_SECRET_LEN:
        return None
    digest = hash_token(secret)

    def read(conn: Connection) -> WebSession | None:
        row = conn.execute(
            select(
                web_sessions.c.id,
                web_sessions.c.csrf_token,
                web_sessions.c.expires_at,
                web_sessions.c.ended_at,
                *api_tokens.c,
            )
            .join(api_tokens, api_tokens.c.id == web_sessions.c.token_id)
            .where(web_sessions.c.id == digest)
        ).first()
        if row is None:
            return None
        m = row._mapping
        token = token_info({k: m[api_tokens.c[k]] for k in TokenInfo.model_fields})
        if m[web_sessions.c.ended_at] is not None or token.revoked:
            return None
        return WebSession(
            m[web_sessions.c.id], token, m[web_sessions.c.csrf_token], m[web_sessions.c.expires_at]
        )

    found = await db.read(read)
    if found is None or found.expires_at <= utcnow():
        return None
    await touch(db, found.token)
    return found


async def end_session(db: Database, session_id: str) -> None:
    """Logout: the session's row is marked ended (its cookie is then refused)."""

    def txn(tx: Tx) -> None:
        tx.conn.execute(
            update(web_sessions)
            .where(web_sessions.c.id == session_id, web_sessions.c.ended_at.is_(None))
            .values(ended_at=tx.now)
        )

    await db.write(txn)
