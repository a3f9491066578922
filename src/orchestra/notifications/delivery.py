"""The notifier: one background task of ``orchestra serve`` and ``orchestra worker``
that queues notifications from the event log and delivers them.

Queueing follows the log after its commits (a :class:`LogFollower` from the stored
cursor), so an unreachable receiver never slows a transition: a resolution commits
and answers whatever the receivers do. Delivery claims due rows in a short
transaction, POSTs outside any transaction, and records the outcome; any number of
processes may run it on one Postgres database (claims skip locked rows).

Guarantees: every event is queued once per target (a unique row). In normal
operation it is sent once; a process killed mid-request leaves the row claimed,
and it is sent once more, with the same ``X-Orchestra-Delivery``, when its lease
runs out — at least once, so receivers dedupe on that id.

Each attempt is recorded (when, how long, what the receiver said) in the
transaction that records its outcome. With ``decision_links`` on, a notification
about a checkpoint links to a single-use ``/d/<token>`` page instead of the
workflow: the link is made in the claim's transaction, one per attempt (only its
hash is stored, so the outbox row keeps the plain link and the token lives only in
the request sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from orchestra.config import Settings
from orchestra.domain.events import NotificationKind
from orchestra.domain.models import Event
from orchestra.domain.statuses import NotificationStatus
from orchestra.notifications.payload import build_payload, encode_body, kind_of, signature
from orchestra.notifications.targets import Target, resolve_targets
from orchestra.store import links, outbox, settled
from orchestra.store.db import Database, Tx, utcnow
from orchestra.store.follow import LogFollower

log = logging.getLogger(__name__)

#: The most of a receiver's answer that is read (the rest is never downloaded).
MAX_RESPONSE_BYTES = 4096
#: A claim outlives its request by this much before another process may send again.
LEASE_MARGIN_S = 5.0
#: Requests out at once (rows claimed and not yet finished), all targets together.
MAX_IN_FLIGHT = 16
#: With no event to queue, the stored cursor still moves on at most this often.
CURSOR_EVERY_S = 5.0


@dataclass(frozen=True)
class Backoff:
    base_s: float = 2.0
    max_s: float = 3600.0

    def after(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1``: base · 2^(attempts-1), capped."""
        return float(min(self.max_s, self.base_s * 2 ** max(0, attempts - 1)))


class Notifier:
    """Queues and delivers; :meth:`run` until ``stop`` is set."""

    def __init__(
        self,
        db: Database,
        targets: Sequence[Target],
        *,
        link_base: str,
        backoff: Backoff | None = None,
        poll_s: float = 1.0,
        transport: httpx.AsyncBaseTransport | None = None,
        link_ttl: timedelta | None = None,
    ) -> None:
        self.db = db
        self.targets = {t.name: t for t in targets}
        self.link_base = link_base.rstrip("/")
        self.backoff = backoff or Backoff()
        self.poll_s = poll_s
        self._transport = transport
        #: How long a decision link lasts (None: payloads keep the workflow's link).
        self.link_ttl = link_ttl
        self._due = asyncio.Event()
        self._last_cursor_write = 0.0

    @classmethod
    def from_settings(cls, db: Database, settings: Settings) -> Notifier | None:
        """The notifier of the configured ``[[notify]]`` targets (None: there are none).
        A secret's missing variable raises :class:`InvalidInput` (at start-up)."""
        if not settings.notify:
            return None
        return cls(
            db,
            resolve_targets(settings.notify),
            link_base=settings.link_base,
            backoff=Backoff(settings.notify_backoff_s, settings.notify_backoff_max_s),
            poll_s=settings.notify_poll_s,
            link_ttl=settings.link_ttl,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Queue and deliver until ``stop``; requests in flight then finish (each
        bounded by its timeout) so that their outcome is recorded."""
        queueing = asyncio.create_task(self._queue_forever(), name="notify-queue")
        try:
            await self._deliver_until(stop)
        finally:
            queueing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await queueing

    # -- queueing --------------------------------------------------------

    async def _queue_forever(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("notifications: following the event log failed; retrying")
                await asyncio.sleep(self.poll_s)

    async def _follow(self) -> None:
        log_end = await self.db.read(settled.end)
        cursor = await self.db.write(lambda tx: outbox.start_cursor_txn(tx, log_end))
        follower = LogFollower(self.db, cursor, poll_s=self.poll_s)
        async for batch in follower.batches():
            await self.queue(batch)

    async def queue(self, batch: Sequence[Event]) -> int:
        """Queue the notifications ``batch`` makes for the targets subscribed to
        them (any already queued are skipped); how many rows were added."""
        if not batch:
            return 0
        wanted = [(e, k) for e in batch if (k := kind_of(e)) is not None and self._to(e, k)]
        cursor = batch[-1].id
        if not wanted and time.monotonic() - self._last_cursor_write < CURSOR_EVERY_S:
            return 0
        added = await self.db.write(lambda tx: self._queue_txn(tx, wanted, cursor))
        self._last_cursor_write = time.monotonic()
        if added:
            self._due.set()
        return added

    def _to(self, event: Event, kind: NotificationKind) -> list[str]:
        """The targets ``event`` goes to: an overdue checkpoint's escalation targets
        (only those), else the targets subscribed to ``kind``."""
        if kind is NotificationKind.CHECKPOINT_OVERDUE:
            named = event.data.get("escalate") or []
            return [n for n in named if n in self.targets]
        return [t.name for t in self.targets.values() if kind in t.events]

    def _queue_txn(self, tx: Tx, wanted: list[tuple[Event, NotificationKind]], cursor: int) -> int:
        rows: list[dict[str, Any]] = []
        for event, kind in wanted:
            assert event.workflow_id is not None
            cp_id = event.data.get("checkpoint_id")
            workflow, checkpoint = outbox.context_txn(
                tx, event.workflow_id, str(cp_id) if cp_id else None
            )
            if workflow is None:
                continue
            payload = build_payload(event, kind, workflow, checkpoint, self.link_base)
            rows += [
                {"target": name, "event_id": event.id, "kind": kind.value, "payload": payload}
                for name in self._to(event, kind)
            ]
        return outbox.enqueue_txn(tx, rows, cursor)

    # -- delivery --------------------------------------------------------

    async def _deliver_until(self, stop: asyncio.Event) -> None:
        """Claim and send while fewer than :data:`MAX_IN_FLIGHT` requests are out; each
        request is its own task, so a receiver that hangs holds up only its own rows."""
        leases = {n: t.timeout_s + LEASE_MARGIN_S for n, t in self.targets.items()}
        in_flight: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(
            transport=self._transport, follow_redirects=False, trust_env=False
        ) as client:
            try:
                while not stop.is_set():
                    room = MAX_IN_FLIGHT - len(in_flight)
                    claimed = await self._claim(leases, room) if room > 0 else []
                    for row in claimed:
                        task = asyncio.create_task(self._deliver(client, row))
                        in_flight.add(task)
                        task.add_done_callback(in_flight.discard)
                    if claimed and len(claimed) == room:
                        continue
                    await self._wait(stop, in_flight)
            finally:
                if in_flight:  # their outcomes are recorded before the client closes
                    await asyncio.wait(in_flight)

    async def _claim(self, leases: dict[str, float], room: int) -> list[dict[str, Any]]:
        try:
            now = utcnow()
            if not await self.db.read(lambda conn: outbox.any_due(conn, list(leases), now)):
                return []
            return await self.db.write(lambda tx: self._claim_txn(tx, leases, room))
        except Exception:
            log.exception("notifications: claiming due deliveries failed")
            return []

    def _claim_txn(self, tx: Tx, leases: dict[str, float], room: int) -> list[dict[str, Any]]:
        """Claim due rows; with decision links on, give each one about a checkpoint a
        fresh link (kept in the claimed row, never in the outbox)."""
        claimed = outbox.claim_due_txn(tx, leases, room)
        if self.link_ttl is None:
            return claimed
        for row in claimed:
            checkpoint = row["payload"].get("checkpoint")
            if isinstance(checkpoint, dict) and checkpoint.get("id"):
                token = links.create_link_txn(
                    tx, str(checkpoint["id"]), row["target"], self.link_ttl
                )
                row["link"] = f"{self.link_base}/d/{token}"
        return claimed

    async def _wait(self, stop: asyncio.Event, in_flight: set[asyncio.Task[None]]) -> None:
        """Until something is due here, a request ends, ``stop``, or ``poll_s``."""
        self._due.clear()
        waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._due.wait())}
        try:
            await asyncio.wait(
                waiters | in_flight, timeout=self.poll_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for w in waiters:
                w.cancel()

    async def _deliver(self, client: httpx.AsyncClient, row: Mapping[str, Any]) -> None:
        target = self.targets[row["target"]]
        started_at, clock = utcnow(), time.monotonic()
        code, error = await self.post(client, target, row)
        duration_ms = int((time.monotonic() - clock) * 1000)
        attempts = int(row["attempts"])
        ok = code is not None and 200 <= code < 300
        if ok:
            status, next_at = NotificationStatus.DELIVERED, utcnow()
        elif attempts >= target.max_attempts:
            status, next_at = NotificationStatus.FAILED, utcnow()
        else:
            status = NotificationStatus.PENDING
            next_at = utcnow() + timedelta(seconds=self.backoff.after(attempts))
        if not ok:
            log.warning(
                "notification %s to %s (workflow %s), attempt %d/%d: %s",
                row["id"],
                target.name,
                row["payload"].get("workflow", {}).get("id"),
                attempts,
                target.max_attempts,
                error,
            )
        try:
            await self.db.write(
                lambda tx: outbox.finish_txn(
                    tx,
                    row["id"],
                    attempts,
                    status=status,
                    next_attempt_at=next_at,
                    error=None if ok else error,
                    status_code=code,
                    started_at=started_at,
                    duration_ms=duration_ms,
                )
            )
        except Exception:
            # The row stays claimed: it is sent again when its lease runs out.
            log.exception("notifications: recording delivery %s failed", row["id"])

    async def post(
        self, client: httpx.AsyncClient, target: Target, row: Mapping[str, Any]
    ) -> tuple[int | None, str | None]:
        """POST one row to its target: (status code or None, what went wrong)."""
        payload = row["payload"]
        if row.get("link"):  # this attempt's decision link
            payload = {**payload, "link": row["link"]}
        body = encode_body(target.format, payload)
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Orchestra-Webhook",
            "X-Orchestra-Event": str(row["kind"]),
            "X-Orchestra-Delivery": str(row["id"]),
            "X-Orchestra-Timestamp": timestamp,
        }
        if target.secret is not None:
            headers["X-Orchestra-Signature"] = signature(target.secret, timestamp, body)
        try:
            async with asyncio.timeout(target.timeout_s):
                async with client.stream(
                    "POST", target.url, content=body, headers=headers, timeout=target.timeout_s
                ) as response:
                    answer = await _bounded_body(response)
        except TimeoutError:
            return None, f"no answer within {target.timeout_s:g}s"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if 200 <= response.status_code < 300:
            return response.status_code, None
        text = answer.decode(errors="replace").strip()
        return response.status_code, f"HTTP {response.status_code}" + (f": {text}" if text else "")


async def _bounded_body(response: httpx.Response) -> bytes:
    """At most :data:`MAX_RESPONSE_BYTES` of the answer, as sent (not decompressed)."""
    got = b""
    async for chunk in response.aiter_raw():
        got += chunk
        if len(got) >= MAX_RESPONSE_BYTES:
            break
    return got[:MAX_RESPONSE_BYTES]
