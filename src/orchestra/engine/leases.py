"""Leases: which worker drives a workflow, until when.

A worker takes a lease (owner, random token, expiry) when it claims or adopts a
workflow, renews it with every transaction it makes (a heartbeat between
them), and releases it when the workflow waits for a person, ends, or is handed
back. Every worker write is guarded by its token: a worker that lost its lease
(it stalled past the expiry and another took over, or the workflow was
cancelled) cannot write. Expiries are UTC timestamps, like every time in the
schema, taken from the transaction's clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam

from orchestra.domain.errors import LeaseLost
from orchestra.store.db import Tx
from orchestra.store.schema import workflows

#: Lease columns cleared whenever a workflow leaves a worker's hands.
NO_LEASE: dict[str, Any] = {"lease_owner": None, "lease_token": None, "lease_expires_at": None}

_TAKE = (
    workflows.update()
    .where(workflows.c.id == bindparam("b_id"))
    .values(
        lease_owner=bindparam("b_owner"),
        lease_token=bindparam("b_token"),
        lease_expires_at=bindparam("b_expires"),
    )
)
_RENEW = (
    workflows.update()
    .where(workflows.c.id == bindparam("b_id"), workflows.c.lease_token == bindparam("b_token"))
    .values(lease_expires_at=bindparam("b_expires"))
)
_RELEASE = (
    workflows.update()
    .where(workflows.c.id == bindparam("b_id"), workflows.c.lease_token == bindparam("b_token"))
    .values(**NO_LEASE)
)


@dataclass
class Lease:
    """A lease this worker holds on one workflow."""

    workflow_id: str
    token: str
    ttl_s: float
    #: Set by the heartbeat when a renewal found the lease gone.
    lost: bool = False

    def expiry(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.ttl_s)

    def take_txn(self, tx: Tx, owner: str) -> dict[str, Any]:
        """Lease the workflow (the caller knows it is free: claimed or adopted); the
        lease columns as written."""
        taken = {
            "lease_owner": owner,
            "lease_token": self.token,
            "lease_expires_at": self.expiry(tx.now),
        }
        params = {
            "b_id": self.workflow_id,
            "b_owner": owner,
            "b_token": self.token,
            "b_expires": taken["lease_expires_at"],
        }
        tx.execute(_TAKE, params)
        return taken

    def renew_txn(self, tx: Tx) -> None:
        """Extend the lease, or raise :class:`LeaseLost` if this worker no longer
        holds it. Every worker transaction starts with this."""
        params = {"b_id": self.workflow_id, "b_token": self.token, "b_expires": self.expiry(tx.now)}
        if tx.execute(_RENEW, params) != 1:
            raise LeaseLost(f"lease on workflow {self.workflow_id} lost")

    def release_txn(self, tx: Tx) -> None:
        """Give the workflow back (any worker may claim it at once)."""
        tx.execute(_RELEASE, {"b_id": self.workflow_id, "b_token": self.token})

    @property
    def guard(self) -> dict[str, Any]:
        """The condition that makes a workflow move happen only under this lease."""
        return {"lease_token": self.token}


def is_leased(row: Mapping[str, Any], now: datetime) -> bool:
    """Whether some worker holds the workflow ``row`` at ``now``."""
    expires = row["lease_expires_at"]
    return expires is not None and expires > now
