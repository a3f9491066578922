"""Decision links: single-use, expiring links in a notification that open one
checkpoint's page after a normal login.

The link's secret part is a random 32-byte token (urlsafe); the row keeps only its
sha256 (a leaked database or outbox holds no usable link), and the lookup is by
that hash, so comparing never runs over the secret itself. Opening a link is a
guarded UPDATE (``used_at IS NULL AND expires_at > now``): of two people opening
the same link at once, one gets the page, the other "already used". A link
carries no credential: it names a page, and the page still asks for the session
and its role; nothing is decided through it.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

from sqlalchemy import bindparam, insert, select, update

from orchestra.store.db import Database, Tx
from orchestra.store.schema import checkpoints, decision_links
from orchestra.store.tokens import hash_token

TOKEN_BYTES = 32
#: What a token looks like (``token_urlsafe(32)`` is 43 characters); anything else
#: is unknown without a lookup.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,64}")
#: The longest ``used_by`` kept (a token's name).
MAX_USER_CHARS = 128

_INSERT = insert(decision_links)
_OPEN = (
    update(decision_links)
    .where(
        decision_links.c.id == bindparam("_id"),
        decision_links.c.used_at.is_(None),
        decision_links.c.expires_at > bindparam("_now"),
    )
    .values(used_at=bindparam("_now"), used_by=bindparam("_by"))
)
_FIND = (
    select(decision_links.c.used_at, decision_links.c.checkpoint_id, checkpoints.c.workflow_id)
    .join(checkpoints, checkpoints.c.id == decision_links.c.checkpoint_id)
    .where(decision_links.c.id == bindparam("_id"))
)


class LinkState(Enum):
    """What opening a link found (not stored: the row's ``used_at`` and
    ``expires_at`` say it)."""

    OPENED = "opened"
    USED = "used"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class OpenedLink:
    state: LinkState
    workflow_id: str | None = None
    checkpoint_id: str | None = None


def create_link_txn(tx: Tx, checkpoint_id: str, target: str | None, ttl: timedelta) -> str:
    """A new link to ``checkpoint_id`` for ``target``, valid for ``ttl``: its token
    (shown once, in the notification; the row has only its hash)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    tx.execute(
        _INSERT,
        {
            "id": hash_token(token),
            "checkpoint_id": checkpoint_id,
            "target": target,
            "created_at": tx.now,
            "expires_at": tx.now + ttl,
        },
    )
    return token


def looks_like_token(token: str) -> bool:
    return _TOKEN.fullmatch(token) is not None


async def open_link(db: Database, token: str, user: str) -> OpenedLink:
    """Use the link of ``token`` for ``user``: the checkpoint it opens (once), or why not."""
    if not looks_like_token(token):
        return OpenedLink(LinkState.UNKNOWN)
    digest = hash_token(token)

    def txn(tx: Tx) -> OpenedLink:
        opened = tx.execute(_OPEN, {"_id": digest, "_now": tx.now, "_by": user[:MAX_USER_CHARS]})
        found = tx.fetch(_FIND, {"_id": digest})
        if not found:
            return OpenedLink(LinkState.UNKNOWN)
        row = found[0]
        if opened == 1:
            return OpenedLink(LinkState.OPENED, row["workflow_id"], row["checkpoint_id"])
        return OpenedLink(LinkState.USED if row["used_at"] is not None else LinkState.EXPIRED)

    return await db.write(txn)
