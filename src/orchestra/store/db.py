"""Database access: one async door for writes, one for reads, on SQLite or Postgres.

Every write is a function ``fn(tx) -> T`` run in one transaction. The caller
awaits its result; the function never sees asyncio. Helpers that take a ``Tx``
are named ``…_txn`` so it is visible that they must run inside one.

- SQLite: one write connection. A write made while no other is in progress
  commits at once on its caller's thread; writes that arrive together queue for
  the writer thread, which commits them together (group commit, one fsync for
  many transitions), each in its own SAVEPOINT so one failing function rolls back
  alone. Reads use other connections (WAL lets them run beside the writer).
- PostgreSQL: writes and reads run on a thread pool with a connection pool.
  Committers share no lock: event ids may become visible out of order, and
  readers take only the settled part of the log (:mod:`orchestra.store.settled`),
  so a cursor never skips an event that commits later with a smaller id.

After a commit the in-process doorbell rings, carrying the events the commit
appended, so this process's followers of the log need not read them back; on
Postgres a ``NOTIFY`` after the commit rings the other processes' bells too (a ring from another
process only says "look again": the rows are the message; a process ignores
the echo of its own notifications, which it has rung for already). The
workers' bell is rung by :meth:`Database.wake_workers`, which the engine calls
after a commit that left work nobody took.

Each database has its :class:`Tx` subclass (:class:`SqliteTx`, :class:`PostgresTx`):
callers run statements through ``tx.execute``/``fetch``/``fetch_locked`` and never
branch on the dialect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from sqlalchemy import (
    Connection,
    Engine,
    String,
    Text,
    bindparam,
    cast,
    create_engine,
    event,
    func,
    insert,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TIMESTAMP
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.elements import ColumnClause
from sqlalchemy.sql.selectable import Select

from orchestra.domain.errors import DatabaseUnavailable
from orchestra.domain.events import EventType
from orchestra.domain.models import Event
from orchestra.store import _fast, schema
from orchestra.store.notify import Doorbell
from orchestra.store.queries import to_event

log = logging.getLogger(__name__)

T = TypeVar("T")
Params = Mapping[str, Any]

NOTIFY_CHANNEL = "orchestra_events"
#: ``data`` is bound as the JSON text encoded once in :meth:`Tx.flush_events`, the
#: text the doorbell carries, so it is not encoded twice. SQLite: the text is what
#: the JSON column stores; the ids are read back with ``last_insert_rowid()``.
_INSERT_EVENT_TEXT = insert(schema.events).values(data=bindparam("data", type_=Text()))
#: Postgres: all of a transaction's events in one statement, as arrays (a row each
#: would cost a round trip each, or a pipeline's set-up). The text is cast to the
#: JSONB column's type. Each id is taken only once the transaction has its own id
#: (xid), so that a reader's snapshot lists the transaction as in progress while
#: its event ids are not yet visible (see :mod:`orchestra.store.settled`); ``CASE``
#: evaluates its condition first. The ids are taken in the order of the arrays.
_XID_THEN_EVENT_ID: ColumnClause[int] = literal_column(
    "CASE WHEN pg_current_xact_id() IS NOT NULL THEN nextval('events_id_seq') END"
)
_EVENT_ROWS = (
    func.unnest(
        bindparam("workflow_ids", type_=ARRAY(String)),
        bindparam("types", type_=ARRAY(String)),
        bindparam("datas", type_=ARRAY(Text)),
        bindparam("created", type_=ARRAY(TIMESTAMP(timezone=True))),
    )
    .table_valued("workflow_id", "type", "data", "created_at", with_ordinality="n")
    .render_derived()
)
_INSERT_EVENTS_PG = (
    insert(schema.events)
    .from_select(
        ["id", "workflow_id", "type", "data", "created_at"],
        select(
            _XID_THEN_EVENT_ID,
            _EVENT_ROWS.c.workflow_id,
            _EVENT_ROWS.c.type,
            cast(_EVENT_ROWS.c.data, JSONB),
            _EVENT_ROWS.c.created_at,
        ).order_by(_EVENT_ROWS.c.n),
    )
    .returning(schema.events.c.id)
)


def utcnow() -> datetime:
    return datetime.now(UTC)


#: An event as a transaction appended it: ``(id, workflow_id, type, data as JSON
#: text, created_at)`` (see :attr:`Tx.appended`).
_Appended = tuple[int, str | None, str, str, datetime]


@dataclass
class Tx:
    """A transaction in progress: a connection plus the events it will append.

    The engine writes through :meth:`execute`, :meth:`fetch` and
    :meth:`fetch_locked`; each database has its subclass (:class:`SqliteTx`,
    :class:`PostgresTx`), so no caller branches on the dialect.
    """

    conn: Connection
    #: Postgres: who is notifying (the committing :class:`Database`), so that it can
    #: tell the echo of its own notifications from another process's.
    origin: str = ""
    now: datetime = field(default_factory=utcnow)
    _events: list[dict[str, Any]] = field(default_factory=list)
    #: The events written, with their ids: what the doorbell carries after the
    #: commit (see :func:`carried_events`).
    appended: list[_Appended] = field(default_factory=list)

    def emit(self, workflow_id: str | None, type: EventType, data: dict[str, Any]) -> None:
        """Append an event; it is written at the end of this transaction. The event
        owns ``data`` from here on: the caller must not change it afterwards."""
        self._events.append(
            {"workflow_id": workflow_id, "type": type.value, "data": data, "created_at": self.now}
        )

    def execute(self, stmt: UpdateBase, params: Params | Sequence[Params]) -> int:
        """Run a prebuilt INSERT/UPDATE/DELETE (one parameter set or many); the row
        count. On the driver's cursor (:mod:`orchestra.store._fast`), as :meth:`fetch`."""
        return _fast.execute_dml(self.conn, stmt, params)

    def returned(self, stmt: UpdateBase, params: Params) -> list[Any]:
        """Run a prebuilt ``INSERT … RETURNING x`` with one parameter set; each row's ``x``."""
        return _fast.returned(self.conn, stmt, params)

    def fetch(self, stmt: Select[Any], params: Params) -> list[dict[str, Any]]:
        """Run a prebuilt SELECT; its rows as dicts."""
        return _fast.fetch_all(self.conn, stmt, params)

    def fetch_locked(
        self, stmt: Select[Any], params: Params, *, skip_locked: bool = False
    ) -> list[dict[str, Any]]:
        """:meth:`fetch`, with the rows locked until the commit (``skip_locked``: rows
        another transaction holds are left out instead of waited for)."""
        return self.fetch(stmt, params)

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """Run a block that can fail alone: on an exception its writes and the events
        it emitted are dropped, and the exception propagates. Straight on the driver:
        SQLAlchemy's nested transactions cost more than the two statements."""
        events = len(self._events)
        _fast.command(self.conn, "SAVEPOINT orchestra_block")
        try:
            yield
        except BaseException:
            _fast.command(self.conn, "ROLLBACK TO SAVEPOINT orchestra_block")
            _fast.command(self.conn, "RELEASE SAVEPOINT orchestra_block")
            del self._events[events:]
            raise
        _fast.command(self.conn, "RELEASE SAVEPOINT orchestra_block")

    def flush_events(self) -> None:
        """Write the events emitted so far (the committing code calls this last)."""
        raise NotImplementedError

    def _encoded_events(self) -> list[dict[str, Any]]:
        rows = [{**row, "data": dumps_json(row["data"])} for row in self._events]
        self._events = []
        return rows

    def _appended(self, ids: Sequence[int], rows: list[dict[str, Any]]) -> None:
        # In place: a caller may hold this list (the engine reads it after the commit).
        self.appended.extend(
            [
                (event_id, row["workflow_id"], row["type"], row["data"], row["created_at"])
                for event_id, row in zip(ids, rows, strict=True)
            ]
        )


class SqliteTx(Tx):
    """SQLite: the single writer holds the whole database for the transaction, so
    nothing needs locking."""

    def flush_events(self) -> None:
        if not self._events:
            return
        rows = self._encoded_events()
        _fast.execute_dml(self.conn, _INSERT_EVENT_TEXT, rows)
        # One writer holds the database: this statement's rows took consecutive ids.
        raw = self.conn.connection.driver_connection
        assert raw is not None
        last = raw.execute("SELECT last_insert_rowid()").fetchone()[0]
        self._appended(range(last - len(rows) + 1, last + 1), rows)


class PostgresTx(Tx):
    """PostgreSQL: rows are locked with ``FOR UPDATE``; no lock is shared by all
    committers (readers settle the ids instead, :mod:`orchestra.store.settled`)."""

    def fetch_locked(
        self, stmt: Select[Any], params: Params, *, skip_locked: bool = False
    ) -> list[dict[str, Any]]:
        return self.fetch(_for_update(stmt, skip_locked), params)

    def flush_events(self) -> None:
        if not self._events:
            return
        rows = self._encoded_events()
        params = {
            "workflow_ids": [row["workflow_id"] for row in rows],
            "types": [row["type"] for row in rows],
            "datas": [row["data"] for row in rows],
            "created": [row["created_at"] for row in rows],
        }
        # Ascending ids are the rows in order, whatever order RETURNING gives them in.
        ids = _fast.returned(self.conn, _INSERT_EVENTS_PG, params, binary=True)
        self._appended(sorted(ids), rows)


#: Locking variants of prebuilt SELECTs, built once each (keyed as in ``_fast``:
#: the entry keeps the statement alive, so its id is not reused).
_LOCKING: dict[tuple[int, bool], tuple[Select[Any], Select[Any]]] = {}


def _for_update(stmt: Select[Any], skip_locked: bool) -> Select[Any]:
    found = _LOCKING.get((id(stmt), skip_locked))
    if found is None or found[0] is not stmt:
        found = _LOCKING[(id(stmt), skip_locked)] = (
            stmt,
            stmt.with_for_update(skip_locked=skip_locked),
        )
    return found[1]


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` and ``sqlite:///path`` and pick our drivers."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class Database:
    """The one way Orchestra talks to its database."""

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = normalise_url(url)
        self.kind = "postgresql" if self.url.startswith("postgresql") else "sqlite"
        self.doorbell = Doorbell()
        self.work_bell = Doorbell()
        #: Names this process's Postgres notifications (see :class:`_PgListener`).
        self.origin = secrets.token_hex(8)
        self._closed = False
        #: Writes in progress from this process's event loops (SQLite: a lone write
        #: commits inline, see :class:`_SqliteWriter`).
        self._writing = 0
        if self.kind == "sqlite":
            self.write_engine = _sqlite_engine(self.url, immediate=True)
            self.read_engine = _sqlite_engine(self.url, immediate=False)
            self._writer: _SqliteWriter | None = _SqliteWriter(self)
            self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="orchestra-read")
        else:
            self.write_engine = _pg_engine(self.url, pool_size)
            self.read_engine = self.write_engine
            self._writer = None
            self._pool = ThreadPoolExecutor(
                max_workers=pool_size, thread_name_prefix="orchestra-db"
            )
        self._listener: _PgListener | None = None
        self._notifier = _PgNotifier(self) if self.kind == "postgresql" else None

    # -- lifecycle -------------------------------------------------------

    def start_listening(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hear other processes' commits (Postgres only; SQLite relies on polling)."""
        self.doorbell.bind(loop)
        self.work_bell.bind(loop)
        if self.kind == "postgresql" and self._listener is None:
            self._listener = _PgListener(self)
            self._listener.start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._writer.stop()
        if self._listener is not None:
            self._listener.stop()
        if self._notifier is not None:
            self._notifier.stop()
        self._pool.shutdown(wait=True)
        self.write_engine.dispose()
        self.read_engine.dispose()

    # -- the two doors ---------------------------------------------------

    async def write(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in one write transaction and return its result after commit.

        SQLite: a write made while no other is in progress commits at once on this
        thread; otherwise it joins the writer thread's next group commit."""
        if self._closed:
            raise DatabaseUnavailable("the database is closed; nothing was changed")
        loop = asyncio.get_running_loop()
        self.doorbell.bind(loop)
        self.work_bell.bind(loop)
        writer = self._writer
        if writer is not None:
            self._writing += 1
            try:
                if writer.idle:
                    # Let the tasks that are ready run first: if they write too, the
                    # writes go to the writer thread together (group commit).
                    await asyncio.sleep(0)
                    if self._writing == 1 and writer.idle:
                        done = writer.try_inline(fn, loop)
                        if done is not None:
                            return done[0]
                fut: asyncio.Future[T] = loop.create_future()
                writer.submit(fn, fut, loop)
                return await fut
            finally:
                self._writing -= 1
        return await loop.run_in_executor(self._pool, self.write_sync, fn)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn``, which only reads. SQLite: in one read transaction (one snapshot
        for all its statements). PostgreSQL: each statement sees what had committed
        when it began, as in a ``READ COMMITTED`` transaction, but with no
        transaction around them (``BEGIN`` and ``COMMIT`` would be two more round
        trips and give no more consistency); a read that needs one view of several
        things asks for them in one statement (as :mod:`orchestra.store.settled` does)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.read_sync, fn)

    def read_sync(self, fn: Callable[[Connection], T]) -> T:
        try:
            with self.read_engine.connect() as opened:
                conn = opened
                if self.kind == "postgresql":
                    conn = opened.execution_options(isolation_level="AUTOCOMMIT")
                with conn.begin():
                    return fn(conn)
        except OperationalError as exc:
            raise _unavailable(exc) from exc

    def write_sync(self, fn: Callable[[Tx], T]) -> T:
        """A write transaction without group commit (Postgres, tools, migrations)."""
        try:
            with self.write_engine.connect() as conn:
                with conn.begin():
                    tx = self._tx(conn)
                    result = fn(tx)
                    tx.flush_events()
                self.ring_bells(None, tx.appended)
                if tx.appended and self._notifier is not None:
                    self._notifier.ring("e")
                return result
        except OperationalError as exc:
            raise _unavailable(exc) from exc

    def _tx(self, conn: Connection) -> Tx:
        return SqliteTx(conn) if self.kind == "sqlite" else PostgresTx(conn, origin=self.origin)

    async def wake_workers(self) -> None:
        """Tell the workers, here and in other processes, that a commit left work for
        them to claim (the engine calls this after such a commit; a workflow it
        handed to this process's worker in the same transaction needs none)."""
        work_bell = self.work_bell
        loop = asyncio.get_running_loop()
        (work_bell.ring if work_bell.loop is loop else work_bell.ring_threadsafe)()
        if self._notifier is not None:
            self._notifier.ring("w")

    def ring_bells(self, here: asyncio.AbstractEventLoop | None, appended: list[_Appended]) -> None:
        """Ring the bells after this process committed: directly when a bell rings on
        the loop ``here`` (the caller's), through its own loop otherwise."""
        bell_loop = self.doorbell.loop  # None: bound to no loop, nobody listens here
        if bell_loop is not None and bell_loop is here:
            self._ring_doorbell(appended)
        elif bell_loop is not None:
            with contextlib.suppress(RuntimeError):  # that loop closed meanwhile
                bell_loop.call_soon_threadsafe(self._ring_doorbell, appended)

    def _ring_doorbell(self, appended: list[_Appended]) -> None:
        """Ring with the commit's events, made into :class:`Event`s here on the bell's
        loop (off the committing thread), and only when someone listens for them."""
        doorbell = self.doorbell
        doorbell.ring(carried_events(appended) if doorbell.listening else [])

    def _heard_from_another_process(self, wakes_workers: bool) -> None:
        self.doorbell.ring_threadsafe()  # carries nothing: listeners read the log
        if wakes_workers:
            self.work_bell.ring_threadsafe()

    async def ping(self) -> bool:
        try:
            await self.read(lambda c: c.execute(text("SELECT 1")).scalar())
        except (DatabaseUnavailable, DBAPIError):
            return False
        return True


def _for_callers(exc: Exception) -> Exception:
    """What the callers of a failed SQLite write get: a database failure becomes
    :class:`DatabaseUnavailable`; anything else (a bug) is passed on. Logged here."""
    log.exception("SQLite write failed")
    return _unavailable(exc) if isinstance(exc, _DATABASE_ERRORS) else exc


def _unavailable(exc: Exception) -> DatabaseUnavailable:
    log.error("database unavailable: %s", exc)
    return DatabaseUnavailable("the database is unavailable; nothing was changed")


def dumps_json(value: Any) -> str:
    """JSON columns' encoding: orjson (several times faster than the standard library
    on the large texts workflows carry); non-string keys become strings as with ``json``."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


#: Keyword arguments every engine gets (the JSON columns' encoding and decoding).
JSON_CODEC: dict[str, Any] = {"json_serializer": dumps_json, "json_deserializer": orjson.loads}


#: A pooled Postgres connection idle for longer than this is pinged before use.
PING_IDLE_S = 1.0


def _pg_engine(url: str, pool_size: int) -> Engine:
    """The Postgres engine: a connection idle for over :data:`PING_IDLE_S` is pinged
    when taken from the pool, and replaced if the server dropped it (SQLAlchemy's
    ``pool_pre_ping`` would ping every time: a round trip per transaction, about a
    tenth of a busy transition's). One just handed back is trusted: were it dropped
    meanwhile, that transaction fails as unavailable and the pool is renewed."""
    engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size, **JSON_CODEC)

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since <= PING_IDLE_S:
            return
        try:
            dbapi_conn.execute("SELECT 1")
            dbapi_conn.rollback()
        except Exception as exc:  # the pool discards it and takes another
            raise DisconnectionError("a pooled connection was dropped by the server") from exc

    return engine


def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
    engine = create_engine(
        url,
        pool_size=1 if immediate else 4,
        max_overflow=0 if immediate else 4,
        connect_args={"check_same_thread": False, "timeout": 30},
        **JSON_CODEC,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: an acknowledged decision survives power loss (WAL's NORMAL would not).
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Straight on the driver: SQLAlchemy's execution path would cost more than
        # the statement (this runs once per transaction). The SQLite writer opens
        # its transactions itself (see _begin) to tell a busy lock from an error.
        raw = conn.connection.driver_connection
        if not raw.in_transaction:  # type: ignore[union-attr]
            raw.execute(begin)  # type: ignore[union-attr]

    return engine


def carried_events(appended: Sequence[_Appended]) -> list[Event]:
    """The events a commit appended, exactly as a reader of their rows gets them
    (``data`` decoded from the very text that was stored)."""
    return [
        to_event(
            {
                "id": event_id,
                "workflow_id": workflow_id,
                "type": type_,
                "data": orjson.loads(data),
                "created_at": created_at,
            }
        )
        for event_id, workflow_id, type_, data, created_at in appended
    ]


_Job = tuple[Callable[[Tx], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


#: The database itself failed (not the function): the connection is dropped and
#: every caller gets :class:`DatabaseUnavailable`. The savepoints and ``COMMIT``
#: run straight on the driver, so the driver's own error counts too (the fast
#: path's statements raise SQLAlchemy's).
_DATABASE_ERRORS = (OperationalError, sqlite3.OperationalError)


class _WriteLockBusy(Exception):
    """Another connection holds SQLite's write lock: the transaction did not begin."""


class _SqliteWriter:
    """The single SQLite writer: one connection, used by one thread at a time.

    Under load, writes queue for the writer thread, which commits each batch once
    (group commit). When nothing else is writing, :meth:`try_inline` commits a write
    at once on the caller's thread instead: two thread hand-offs cost more than the
    commit itself, and with nobody else writing there is nothing to group.
    """

    max_batch = 256
    #: An inline commit slower than this (a slow disk) stops inline commits for
    #: ``inline_pause_s``: the caller's event loop must not wait on a slow fsync.
    inline_max_s = 0.005
    inline_pause_s = 5.0
    #: How long a write waits for another process to release SQLite's write lock.
    busy_timeout_s = 30.0

    def __init__(self, db: Database) -> None:
        self._db = db
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        #: Held by whoever uses the connection: the writer thread or an inline caller.
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._inline_paused_until = 0.0
        self._thread = threading.Thread(target=self._loop, name="orchestra-writer", daemon=True)
        self._thread.start()

    def submit(
        self, fn: Callable[[Tx], Any], fut: asyncio.Future[Any], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._queue.put((fn, fut, loop))

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @property
    def idle(self) -> bool:
        """Nothing queued, the connection free, and inline commits not paused."""
        return (
            self._queue.empty()
            and not self._lock.locked()
            and time.monotonic() >= self._inline_paused_until
        )

    def try_inline(self, fn: Callable[[Tx], T], loop: asyncio.AbstractEventLoop) -> tuple[T] | None:
        """Commit ``fn`` now on this thread if the connection is free; ``(result,)``,
        or None when busy (then submit it). Its exception propagates as it would
        from the writer thread."""
        if not self._lock.acquire(blocking=False):
            return None
        started = time.monotonic()
        try:
            outcomes, appended = self._run([fn])
        except _WriteLockBusy:  # another process writes: wait on the writer thread
            return None
        except Exception as exc:
            err = _for_callers(exc)
            if err is exc:
                raise
            raise err from exc
        finally:
            self._lock.release()
            if time.monotonic() - started > self.inline_max_s:
                self._inline_paused_until = time.monotonic() + self.inline_pause_s
        self._db.ring_bells(loop, appended)
        ok, value = outcomes[0]
        if not ok:
            raise value
        return (value,)

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                break
            batch = [job]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            try:
                with self._lock:
                    outcomes, appended = self._run_waiting([fn for fn, _fut, _loop in batch])
            except Exception as exc:  # noqa: BLE001 - logged by _for_callers, handed to callers
                err = _for_callers(exc)
                for _fn, fut, loop in batch:
                    loop.call_soon_threadsafe(_set_exception, fut, err)
            else:
                self._hand_back(batch, outcomes, appended)
            if stop:
                break

    def _run(
        self, fns: list[Callable[[Tx], Any]]
    ) -> tuple[list[tuple[bool, Any]], list[_Appended]]:
        """Run ``fns`` in one transaction (the caller holds the lock): each function's
        outcome and the events appended. A database error
        discards the connection (the next write opens a new one) and propagates;
        :class:`_WriteLockBusy` (nothing was run) keeps it."""
        try:
            if self._conn is None:
                self._conn = self._db.write_engine.connect()
                # No busy handler on this connection: it must never sleep on an event
                # loop. The writer thread waits for the lock instead (_run_waiting).
                raw = self._conn.connection.driver_connection
                assert raw is not None
                raw.execute("PRAGMA busy_timeout=0")
            return _commit_together(self._conn, fns)
        except _WriteLockBusy:
            raise
        except Exception:
            if self._conn is not None:
                self._conn.invalidate()  # a new driver connection next time, not the pooled one
                self._conn.close()
                self._conn = None
            raise

    def _run_waiting(
        self, fns: list[Callable[[Tx], Any]]
    ) -> tuple[list[tuple[bool, Any]], list[_Appended]]:
        """:meth:`_run`, waiting (here, on the writer thread) while another process
        holds SQLite's write lock, for up to ``busy_timeout_s``."""
        deadline = time.monotonic() + self.busy_timeout_s
        pause = 0.001
        while True:
            try:
                return self._run(fns)
            except _WriteLockBusy as busy:
                if time.monotonic() >= deadline:
                    raise DatabaseUnavailable(
                        "the database is locked by another process; nothing was changed"
                    ) from busy
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _hand_back(
        self,
        batch: list[_Job],
        outcomes: list[tuple[bool, Any]],
        appended: list[_Appended],
    ) -> None:
        """One wake-up per event loop delivers every result; the bells are rung from
        one of those wake-ups (the doorbell's loop when it is among them)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for (ok, value), (_fn, fut, loop) in zip(outcomes, batch, strict=True):
            by_loop.setdefault(loop, []).append((fut, ok, value))
        doorbell_loop = self._db.doorbell.loop
        ringer = doorbell_loop if doorbell_loop in by_loop else next(iter(by_loop))
        for loop, deliveries in by_loop.items():
            ring = loop is ringer
            loop.call_soon_threadsafe(self._deliver, loop, deliveries, ring, appended)

    def _deliver(
        self,
        loop: asyncio.AbstractEventLoop,
        deliveries: list[tuple[asyncio.Future[Any], bool, Any]],
        ring: bool,
        appended: list[_Appended],
    ) -> None:
        for fut, ok, value in deliveries:
            (_set_result if ok else _set_exception)(fut, value)
        if ring:
            self._db.ring_bells(loop, appended)


def _begin(conn: Connection) -> Any:
    """``BEGIN IMMEDIATE`` on the write connection, then SQLAlchemy's transaction
    around it; :class:`_WriteLockBusy` if another connection holds the write lock
    (this connection does not wait by itself)."""
    raw = conn.connection.driver_connection
    assert raw is not None
    try:
        raw.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:
            raise _WriteLockBusy from exc
        raise OperationalError("BEGIN IMMEDIATE", None, exc) from exc
    return conn.begin()  # the begin listener sees the transaction open and adds none


def _commit_together(
    conn: Connection, fns: list[Callable[[Tx], Any]]
) -> tuple[list[tuple[bool, Any]], list[_Appended]]:
    """Run each function in the same transaction and commit once. A function that
    raises is rolled back alone (its own savepoint) and its exception becomes its
    outcome; a database error (disk full, I/O error, read-only file: ``OperationalError``,
    from SQLAlchemy or straight from the driver) aborts them all."""
    outcomes: list[tuple[bool, Any]] = []
    appended: list[_Appended] = []
    if len(fns) == 1:  # alone: no savepoint needed, a failure rolls back the tx
        tx = SqliteTx(conn)
        try:
            with _begin(conn):
                result = fns[0](tx)
                tx.flush_events()
        except (*_DATABASE_ERRORS, _WriteLockBusy):
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the caller, not swallowed
            return [(False, exc)], []
        return [(True, result)], tx.appended
    with _begin(conn):
        # Savepoints straight on the driver: cheaper than SQLAlchemy's nested
        # transactions, and invisible to the functions, which see one transaction.
        raw = conn.connection.driver_connection
        assert raw is not None
        for fn in fns:
            tx = SqliteTx(conn)
            raw.execute("SAVEPOINT orchestra_job")
            try:
                result = fn(tx)
                tx.flush_events()
                raw.execute("RELEASE orchestra_job")
            except Exception as exc:
                raw.execute("ROLLBACK TO orchestra_job")
                raw.execute("RELEASE orchestra_job")
                if isinstance(exc, _DATABASE_ERRORS):
                    raise
                outcomes.append((False, exc))
                continue
            appended += tx.appended
            outcomes.append((True, result))
    return outcomes, appended


def _set_result(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


class _PgListener:
    """LISTEN on the events channel in a thread and ring the doorbells."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="orchestra-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg

        dsn = self._db.url.replace("postgresql+psycopg://", "postgresql://", 1)
        while not self._stop.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            kind, _, origin = note.payload.partition(":")
                            if origin != self._db.origin:  # ours rang when committed
                                self._db._heard_from_another_process("w" in kind)
            except psycopg.Error:
                log.warning("LISTEN connection lost; reconnecting", exc_info=True)
                time.sleep(1)


class _PgNotifier:
    """``NOTIFY`` the other processes after this one's commits, from one connection.

    Not inside the committing transactions: a transaction that notifies takes a
    lock shared by the whole cluster while it commits, which would line every
    committer up behind one another. Rings that arrive while a notification is
    being sent are sent together as the next one (``e``, ``w`` or ``ew``), so a
    burst of commits costs a few notifications, not one each.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._kinds: set[str] = set()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def ring(self, kind: str) -> None:
        with self._cond:
            if self._stopping:
                return
            self._kinds.add(kind)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="orchestra-notify", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=5)

    def _next(self) -> str | None:
        with self._cond:
            while not self._kinds and not self._stopping:
                self._cond.wait()
            kinds, self._kinds = self._kinds, set()
        return "".join(sorted(kinds)) or None

    def _run(self) -> None:
        import psycopg

        dsn = self._db.url.replace("postgresql+psycopg://", "postgresql://", 1)
        conn: psycopg.Connection[Any] | None = None
        while (kinds := self._next()) is not None:
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(dsn, autocommit=True)
                conn.execute(
                    f"SELECT pg_notify('{NOTIFY_CHANNEL}', %s)", (f"{kinds}:{self._db.origin}",)
                )
            except psycopg.Error:
                # Not fatal: the other processes poll the log and for work; commits stand.
                log.warning(
                    "could not notify the other processes; they will find it by polling",
                    exc_info=True,
                )
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()
