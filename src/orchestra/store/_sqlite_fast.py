"""A lean path for the engine's hot statements on SQLite (private to the store:
the engine reaches it only through :class:`orchestra.store.db.SqliteTx`).

SQLAlchemy Core builds, caches and executes statements portably, but on the
hot path most of its cost per execution is bookkeeping (cache keys, execution
contexts, result objects), several times the cost of SQLite's own work. For the
engine's few prebuilt INSERT/UPDATE statements we compile once per set of
parameter names with SQLAlchemy itself — so the SQL and the type conversions
(JSON, timestamps) are exactly SQLAlchemy's — and execute on the DBAPI cursor
of the same connection, inside the same transaction. Postgres takes the normal
path (its writes run in parallel threads; the per-call overhead matters less).

Compiled statements are cached by the statement object itself: the cache holds a
reference to it, so its ``id`` cannot be reused by another statement while the
entry lives, and a hit is confirmed by identity. The statements are prebuilt
constants (or built once per shape), so the cache stays small.
``tests/integration/test_sqlite_fast_path.py`` replays every statement a Plan &
Review run sends through here on SQLAlchemy's own path and compares the rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.selectable import Select

Params = Mapping[str, Any]

#: Per bound name, in statement order: (name, its default, its type conversion or None).
_Binds = list[tuple[str, Any, Callable[[Any], Any] | None]]
_cache: dict[tuple[int, tuple[str, ...]], tuple[UpdateBase, str, _Binds]] = {}


def _binds(compiled: Any) -> _Binds:
    defaults = dict(compiled.construct_params(_check=False))
    processors = compiled._bind_processors
    return [
        (name, defaults.get(name), p if callable(p := processors.get(name)) else None)
        for name in compiled.positiontup or []
    ]


def _compile(conn: Connection, stmt: UpdateBase, keys: tuple[str, ...]) -> tuple[str, _Binds]:
    found = _cache.get((id(stmt), keys))
    if found is None or found[0] is not stmt:
        compiled = stmt.compile(dialect=conn.dialect, column_keys=list(keys))
        found = _cache[(id(stmt), keys)] = (stmt, compiled.string, _binds(compiled))
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


def execute_dml(conn: Connection, stmt: UpdateBase, params: Params | Sequence[Params]) -> int:
    """Execute a prebuilt INSERT/UPDATE with ``params`` (one dict or many); return
    the row count. ``stmt`` must be prebuilt (it is cached, see the module's docstring)."""
    rows: Sequence[Params] = [params] if isinstance(params, Mapping) else params
    many = not isinstance(params, Mapping)
    if conn.dialect.name != "sqlite":
        return int(conn.execute(stmt, list(rows) if many else rows[0]).rowcount)
    if not rows:
        return 0
    sql, binds = _compile(conn, stmt, tuple(sorted(rows[0])))
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        if many:
            cursor.executemany(sql, [_row(binds, r) for r in rows])
        else:
            cursor.execute(sql, _row(binds, rows[0]))
        return int(cursor.rowcount)
    finally:
        cursor.close()


_Fetch = tuple[str, _Binds, list[str], list[Callable[[Any], Any] | None]]
#: Per statement: the statement itself (see the module docstring) and its compiled
#: form, or None for a statement this path does not take (expanding ``IN`` lists).
_fetch_cache: dict[int, tuple[Select[Any], _Fetch | None]] = {}


def _compile_select(conn: Connection, stmt: Select[Any]) -> _Fetch | None:
    found = _fetch_cache.get(id(stmt))
    if found is not None and found[0] is stmt:
        return found[1]
    dialect = conn.dialect
    compiled = stmt.compile(dialect=dialect)
    made: _Fetch | None = None
    if not compiled.post_compile_params:
        columns = list(stmt.selected_columns)
        made = (
            compiled.string,
            _binds(compiled),
            # The names SQLAlchemy's rows use (``anon_1`` for an unlabelled expression).
            [result[0] for result in compiled._result_columns],
            [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns],
        )
    _fetch_cache[id(stmt)] = (stmt, made)
    return made


def fetch_all(conn: Connection, stmt: Select[Any], params: Params) -> list[dict[str, Any]]:
    """Run a prebuilt SELECT and return its rows as dicts, with SQLAlchemy's own
    result conversions (JSON, timestamps). ``stmt`` must be prebuilt."""
    compiled = _compile_select(conn, stmt) if conn.dialect.name == "sqlite" else None
    if compiled is None:
        return [dict(r._mapping) for r in conn.execute(stmt, dict(params))]
    sql, binds, keys, results = compiled
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, _row(binds, params))
        raw_rows = cursor.fetchall()
    finally:
        cursor.close()
    return [
        {
            key: (proc(value) if proc is not None and value is not None else value)
            for key, proc, value in zip(keys, results, raw, strict=True)
        }
        for raw in raw_rows
    ]
