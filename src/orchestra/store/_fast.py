"""A lean path for the engine's hot statements, on SQLite and PostgreSQL (private to
the store: the rest of Orchestra reaches it through :class:`orchestra.store.db.Tx`
and the store's queries).

SQLAlchemy Core builds, caches and executes statements portably, but on the
hot path most of its cost per execution is bookkeeping (cache keys, execution
contexts, result objects), several times the cost of SQLite's own work and
about as much as psycopg's whole round trip. For the engine's prebuilt
statements we compile once per set of parameter names with SQLAlchemy itself —
so the SQL and the type conversions (JSON, timestamps, bind casts) are exactly
SQLAlchemy's — and execute on the DBAPI cursor of the same connection, inside
the same transaction. Both databases take positional parameters: SQLite's ``?``
and, on PostgreSQL, ``$1`` through psycopg's :class:`~psycopg.RawCursor`, which
passes the query as compiled (no ``%(name)s`` rewriting per call); psycopg
prepares a query it sees repeatedly on a connection by itself.

Compiled statements are cached by the statement object itself: the cache holds a
reference to it, so its ``id`` cannot be reused by another statement while the
entry lives, and a hit is confirmed by identity. The statements are prebuilt
constants (or built once per shape), so the cache stays small.
``tests/integration/test_fast_path.py`` replays every statement a Plan & Review
run sends through here on SQLAlchemy's own path, on both databases, and compares
the rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.selectable import Select

Params = Mapping[str, Any]

#: PostgreSQL statements are compiled for psycopg with ``$1`` parameters (the
#: engines' own dialect uses ``%(name)s``); types and casts are the same.
_PG_POSITIONAL = PGDialect_psycopg(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]

#: Per bound name, in statement order: (name, its default, its type conversion or None).
_Binds = list[tuple[str, Any, Callable[[Any], Any] | None]]
_cache: dict[tuple[int, str, tuple[str, ...]], tuple[UpdateBase, str, _Binds]] = {}


def _dialect(conn: Connection) -> Dialect:
    return conn.dialect if conn.dialect.name == "sqlite" else _PG_POSITIONAL


def _binds(compiled: Any) -> _Binds:
    defaults = dict(compiled.construct_params(_check=False))
    processors = compiled._bind_processors
    return [
        (name, defaults.get(name), p if callable(p := processors.get(name)) else None)
        for name in compiled.positiontup or []
    ]


def _compile(conn: Connection, stmt: UpdateBase, keys: tuple[str, ...]) -> tuple[str, _Binds]:
    key = (id(stmt), conn.dialect.name, keys)
    found = _cache.get(key)
    if found is None or found[0] is not stmt:
        compiled = stmt.compile(dialect=_dialect(conn), column_keys=list(keys))
        found = _cache[key] = (stmt, compiled.string, _binds(compiled))
    return found[1], found[2]


#: The last timestamp converted by each conversion: a transaction binds its one
#: ``now`` many times. Timestamps are immutable, so identity is a safe key.
_last_timestamp: dict[Callable[[Any], Any], tuple[datetime, Any]] = {}


def _convert(proc: Callable[[Any], Any], value: Any) -> Any:
    if type(value) is not datetime:
        return proc(value)
    seen = _last_timestamp.get(proc)
    if seen is not None and seen[0] is value:
        return seen[1]
    converted = proc(value)
    _last_timestamp[proc] = (value, converted)
    return converted


def _row(binds: _Binds, params: Params) -> tuple[Any, ...]:
    """One row of driver values, with SQLAlchemy's conversions."""
    values = []
    for name, default, proc in binds:
        value = params.get(name, default)
        values.append(_convert(proc, value) if proc is not None and value is not None else value)
    return tuple(values)


def _cursor(conn: Connection) -> Any:
    """The driver's cursor on ``conn``'s connection, made once and kept with it (a
    cursor of either driver keeps nothing between statements that were read to
    the end); PostgreSQL's takes the compiled ``$1`` queries as they are."""
    info = conn.connection.info
    cursor = info.get("orchestra_cursor")
    if cursor is None:
        raw: Any = conn.connection.driver_connection
        made = raw.cursor() if conn.dialect.name == "sqlite" else psycopg.RawCursor(raw)
        cursor = info["orchestra_cursor"] = made
    return cursor


_DRIVER_ERRORS = (psycopg.Error, sqlite3.Error)


def _error(sql: str, exc: Exception) -> StatementError:
    """A driver's error as SQLAlchemy's exception for it (``OperationalError``,
    ``IntegrityError``, ``DataError``, …), as SQLAlchemy's own path raises it, so
    callers (the API's error answers, the SQLite writer) see one kind."""
    base = psycopg.Error if isinstance(exc, psycopg.Error) else sqlite3.Error
    return DBAPIError.instance(sql, None, exc, base, hide_parameters=True)


def command(conn: Connection, sql: str) -> None:
    """Run a statement without parameters (``SAVEPOINT`` and the like)."""
    try:
        _cursor(conn).execute(sql)
    except _DRIVER_ERRORS as exc:
        raise _error(sql, exc) from exc


def execute_dml(conn: Connection, stmt: UpdateBase, params: Params | Sequence[Params]) -> int:
    """Execute a prebuilt INSERT/UPDATE/DELETE with ``params`` (one dict or many);
    return the row count. ``stmt`` must be prebuilt (it is cached, see the module's
    docstring)."""
    cursor = _cursor(conn)
    if isinstance(params, Mapping):
        sql, binds = _compile(conn, stmt, tuple(sorted(params)))
        try:
            cursor.execute(sql, _row(binds, params))
        except _DRIVER_ERRORS as exc:
            raise _error(sql, exc) from exc
        return int(cursor.rowcount)
    if not params:
        return 0
    sql, binds = _compile(conn, stmt, tuple(sorted(params[0])))
    try:
        # psycopg sends the rows in one pipeline and sums their row counts.
        cursor.executemany(sql, [_row(binds, r) for r in params])
    except _DRIVER_ERRORS as exc:
        raise _error(sql, exc) from exc
    return int(cursor.rowcount)


def returned(
    conn: Connection, stmt: UpdateBase, params: Params, *, binary: bool = False
) -> list[Any]:
    """Run a prebuilt ``INSERT … RETURNING x`` (one parameter set); each row's ``x``.
    PostgreSQL, ``binary``: the values go in binary form (arrays of long texts cost
    psycopg a regular-expression escape per element in text form)."""
    sql, binds = _compile(conn, stmt, tuple(sorted(params)))
    cursor = _cursor(conn)
    try:
        if binary and conn.dialect.name != "sqlite":
            cursor.execute(sql, _row(binds, params), binary=True)
        else:
            cursor.execute(sql, _row(binds, params))
        return [row[0] for row in cursor.fetchall()]
    except _DRIVER_ERRORS as exc:
        raise _error(sql, exc) from exc


@dataclass
class _Fetch:
    """A SELECT as this path runs it."""

    sql: str
    binds: _Binds
    #: The names SQLAlchemy's rows use (``anon_1`` for an unlabelled expression).
    keys: list[str]
    types: list[Any]
    #: Each column's result conversion, made at the first run: some depend on the
    #: type the database reports for the column (PostgreSQL's numerics).
    results: list[Callable[[Any], Any] | None] | None = None


#: Per statement: the statement itself (see the module docstring) and its compiled
#: form, or None for a statement this path does not take (expanding ``IN`` lists).
_fetch_cache: dict[tuple[int, str], tuple[Select[Any], _Fetch | None]] = {}


def _compile_select(conn: Connection, stmt: Select[Any]) -> _Fetch | None:
    key = (id(stmt), conn.dialect.name)
    found = _fetch_cache.get(key)
    if found is not None and found[0] is stmt:
        return found[1]
    dialect = _dialect(conn)
    compiled = stmt.compile(dialect=dialect)
    made: _Fetch | None = None
    if not compiled.post_compile_params:
        made = _Fetch(
            compiled.string,
            _binds(compiled),
            [result[0] for result in compiled._result_columns],
            [c.type.dialect_impl(dialect) for c in stmt.selected_columns],
        )
    _fetch_cache[key] = (stmt, made)
    return made


def fetch_all(conn: Connection, stmt: Select[Any], params: Params) -> list[dict[str, Any]]:
    """Run a prebuilt SELECT and return its rows as dicts, with SQLAlchemy's own
    result conversions (JSON, timestamps). ``stmt`` must be prebuilt."""
    compiled = _compile_select(conn, stmt)
    if compiled is None:
        return [dict(r._mapping) for r in conn.execute(stmt, dict(params))]
    cursor = _cursor(conn)
    try:
        cursor.execute(compiled.sql, _row(compiled.binds, params))
        raw_rows = cursor.fetchall()
    except _DRIVER_ERRORS as exc:
        raise _error(compiled.sql, exc) from exc
    results = compiled.results
    if results is None:
        dialect = _dialect(conn)
        results = compiled.results = [
            impl.result_processor(dialect, column[1])
            for impl, column in zip(compiled.types, cursor.description, strict=True)
        ]
    keys = compiled.keys
    if not any(results):
        return [dict(zip(keys, raw, strict=True)) for raw in raw_rows]
    return [
        {
            key: (proc(value) if proc is not None and value is not None else value)
            for key, proc, value in zip(keys, results, raw, strict=True)
        }
        for raw in raw_rows
    ]
