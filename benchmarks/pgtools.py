"""PostgreSQL helpers shared by the benchmarks: a fresh database per run, CPU of processes.

The benchmark scripts import this as a sibling module (a script's own directory is the
first entry of ``sys.path``).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import psycopg

_TICKS = os.sysconf("SC_CLK_TCK")


def fresh_pg(url: str) -> str:
    """Create an empty database on ``url``'s server; return its URL."""
    name = f"orchestra_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + "/" + name


def drop_pg(url: str, admin: str) -> None:
    """Drop the database ``url`` names (through ``admin``, another database)."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` so far, from ``/proc/PID/stat`` (0 once gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # The command name (field 2) may hold spaces; fields after its ')' are fixed.
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _TICKS
