"""Volume benchmark: the pages and the API with many workflows waiting at checkpoints.

Seeds ``--workflows`` (default 100,000) Plan & Review workflows paused at their plan
checkpoint — one run by the real engine, the rest bulk copies of its rows
(``tests/support/volume.py``) — then starts a real ``orchestra serve`` process on
that database (authentication on) and measures, one request at a time with httpx,
the p50/p99 of the dashboard, the inbox (first and second page), the workflow list
filtered to those waiting, the list endpoints of the API, one checkpoint's panel and
one workflow's page; then the server's resident memory (``VmRSS``, and its peak
``VmHWM``, from ``/proc/PID/status``). Last, it resolves a few of the copies through
the API and checks that each goes on to its next checkpoint, as the original would.

    python benchmarks/volume.py [--workflows 100000] [--requests 200] [--pg postgresql://…/test]

SQLite by default (a file in a temporary directory); ``--pg`` runs on a fresh
PostgreSQL database made on that server (dropped afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.*

import httpx
import psycopg
from tests.acceptance.server import make_tokens, running_server
from tests.support.volume import paused_template, seed_paused

from orchestra.domain.roles import Role
from orchestra.domain.statuses import WorkflowStatus
from orchestra.store.db import Database
from orchestra.store.migrate import upgrade
from orchestra.workflows.plan_review import REVIEWS_READY

WARMUP = 5


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextmanager
def database(pg: str | None, directory: Path) -> Iterator[str]:
    """A fresh, migrated database: a SQLite file in ``directory`` or a new PostgreSQL one."""
    if pg is None:
        url = f"sqlite:///{directory / 'orchestra.db'}"
    else:
        name = f"orchestra_volume_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = pg.rsplit("/", 1)[0] + "/" + name
    db = Database(url)
    upgrade(db.write_engine)
    db.close()
    try:
        yield url
    finally:
        if pg is not None:
            with psycopg.connect(pg, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


async def seed(url: str, n: int) -> float:
    db = Database(url)
    try:
        started = time.perf_counter()
        template = await paused_template(db)
        await seed_paused(db, template, n)
        return time.perf_counter() - started
    finally:
        db.close()


def rss_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak) of a process, in KiB."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


async def measure(client: httpx.AsyncClient, path: str, requests: int) -> tuple[float, float]:
    """p50 and p99 of ``requests`` sequential GETs of ``path``, in ms (after a warm-up)."""
    samples = []
    for i in range(WARMUP + requests):
        started = time.perf_counter()
        r = await client.get(path)
        elapsed = time.perf_counter() - started
        if r.status_code != 200:
            raise RuntimeError(f"GET {path}: {r.status_code} {r.text[:300]}")
        if i >= WARMUP:
            samples.append(elapsed * 1000)
    return statistics.median(samples), pct(samples, 0.99)


async def pages(client: httpx.AsyncClient) -> list[tuple[str, str]]:
    """The pages to measure: (label, path)."""
    first = (await client.get("/api/checkpoints", params={"limit": 50})).json()
    cp = first["items"][-1]
    return [
        ("GET / (dashboard: workflows)", "/"),
        ("GET /?status=awaiting_checkpoint", f"/?status={WorkflowStatus.AWAITING_CHECKPOINT}"),
        ("GET /inbox", "/inbox"),
        ("GET /inbox (next page)", f"/inbox?cursor={first['next_cursor']}"),
        ("GET /checkpoints/{id}/panel", f"/checkpoints/{cp['id']}/panel"),
        ("GET /workflows/{id}", f"/workflows/{cp['workflow_id']}"),
        ("GET /api/checkpoints", "/api/checkpoints"),
        ("GET /api/checkpoints (next page)", f"/api/checkpoints?cursor={first['next_cursor']}"),
        ("GET /api/workflows", "/api/workflows"),
        ("GET /api/checkpoints/{id}", f"/api/checkpoints/{cp['id']}"),
    ]


async def verify(client: httpx.AsyncClient, count: int) -> None:
    """Resolve ``count`` copies (the oldest) and check each reaches its next checkpoint."""
    listing = (await client.get("/api/checkpoints", params={"limit": count})).json()["items"]
    for cp in listing:
        r = await client.post(f"/api/checkpoints/{cp['id']}/resolve", json={"action": "approve"})
        r.raise_for_status()
    deadline = time.monotonic() + 60
    waiting = {cp["workflow_id"] for cp in listing}
    while waiting and time.monotonic() < deadline:
        for wid in list(waiting):
            wf = (await client.get(f"/api/workflows/{wid}")).json()
            pending = wf.get("pending_checkpoint") or {}
            if pending.get("step_name") == REVIEWS_READY:
                waiting.discard(wid)
        await asyncio.sleep(0.2)
    if waiting:
        raise RuntimeError(f"seeded workflows did not continue after approval: {sorted(waiting)}")


async def run(base_url: str, token: str, requests: int) -> list[tuple[str, float, float]]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as client:
        return [
            (label, *await measure(client, path, requests)) for label, path in await pages(client)
        ]


async def check(base_url: str, token: str, count: int) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as client:
        await verify(client, count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflows", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200, help="per page, after a warm-up")
    parser.add_argument("--verify", type=int, default=3, help="copies to resolve at the end")
    parser.add_argument("--pg", help="a PostgreSQL server URL (a database is made on it)")
    args = parser.parse_args()
    backend = "PostgreSQL" if args.pg else "SQLite"
    with (
        tempfile.TemporaryDirectory(prefix="orchestra-volume-") as tmp,
        database(args.pg, Path(tmp)) as url,
    ):
        took = asyncio.run(seed(url, args.workflows))
        print(
            f"{args.workflows} workflows paused at a checkpoint, {backend} (seeded in {took:.0f} s)"
        )
        token = make_tokens(url, {"bench": Role.ADMIN})["bench"]
        env = {"ORCHESTRA_LOG_LEVEL": "WARNING"}
        with running_server(url, Path(tmp) / "srv", env=env) as server:
            started = rss_kib(server.proc.pid)
            rows = asyncio.run(run(server.base_url, token, args.requests))
            after = rss_kib(server.proc.pid)
            asyncio.run(check(server.base_url, token, args.verify))
        width = max(len(label) for label, _, _ in rows)
        print(f"{'':{width}}  {'p50 ms':>8}  {'p99 ms':>8}   ({args.requests} requests each)")
        for label, p50, p99 in rows:
            print(f"{label:{width}}  {p50:8.1f}  {p99:8.1f}")
        print(
            f"server RSS: {started['VmRSS'] / 1024:.0f} MiB at start, "
            f"{after['VmRSS'] / 1024:.0f} MiB after the run (peak {after['VmHWM'] / 1024:.0f} MiB)"
        )
        print(
            f"verified: {args.verify} copies resolved through the API reached their next checkpoint"
        )


if __name__ == "__main__":
    main()
