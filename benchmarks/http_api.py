"""HTTP benchmark: Plan & Review through a real ``orchestra`` server process.

Three figures, all on loopback against a server subprocess on a fresh SQLite file
(instant demo agents, authentication on):

1. **Throughput**: workflows per second at concurrency 20. Each client task runs
   create → (plan checkpoint) → approve → (reviews checkpoint) → approve, learning
   about checkpoints from one shared SSE stream (``/api/events/stream``), the way
   a dashboard would.
2. **Resolve → next checkpoint latency**: from sending the plan approval to
   receiving the reviews checkpoint's ``checkpoint_created`` event on the SSE
   stream (the reviewers run in between), p50/p99, both under the load above and
   one workflow at a time.
3. **SSE fan-out**: how many subscribers to ``/api/events/stream`` one server holds
   while events still reach every subscriber within 100 ms p99 (from the event's
   commit timestamp to the client reading it). A second server runs without its
   worker, so each created workflow emits exactly one event, at a steady rate.

Run: ``.venv/bin/python benchmarks/http_api.py`` (``--help`` for sizes).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.acceptance

import httpx
from httpx_sse import aconnect_sse
from tests.acceptance.server import make_tokens, running_server

from orchestra.domain.events import EventType
from orchestra.domain.roles import Role
from orchestra.store.db import Database
from orchestra.store.migrate import upgrade

PLAN_READY = "plan_ready_for_review"
REVIEWS_READY = "reviews_ready_for_consolidation"
P99_TARGET_S = 0.100


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def fresh_sqlite(directory: Path) -> str:
    url = f"sqlite:///{directory / 'orchestra.db'}"
    db = Database(url)
    upgrade(db.write_engine)
    db.close()
    return url


# -- 1 and 2: Plan & Review over HTTP -------------------------------------------


@dataclass
class Dispatcher:
    """Reads one SSE stream and hands each workflow's checkpoint events to its waiter."""

    waiting: dict[str, asyncio.Queue[tuple[str, str, float]]] = field(default_factory=dict)
    early: dict[str, list[tuple[str, str, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def queue(self, workflow_id: str) -> asyncio.Queue[tuple[str, str, float]]:
        q: asyncio.Queue[tuple[str, str, float]] = asyncio.Queue()
        for item in self.early.pop(workflow_id, []):
            q.put_nowait(item)
        self.waiting[workflow_id] = q
        return q

    async def run(self, client: httpx.AsyncClient, after: int) -> None:
        url = f"/api/events/stream?after={after}"
        async with aconnect_sse(client, "GET", url) as source:
            async for sse in source.aiter_sse():
                if sse.event != EventType.CHECKPOINT_CREATED:
                    continue
                event = sse.json()
                item = (event["data"]["step"], event["data"]["checkpoint_id"], time.perf_counter())
                q = self.waiting.get(event["workflow_id"])
                if q is None:
                    self.early[event["workflow_id"]].append(item)
                else:
                    q.put_nowait(item)


async def one_workflow(
    client: httpx.AsyncClient, events: Dispatcher, latencies: list[float]
) -> None:
    r = await client.post("/api/workflows", json={"name": "bench", "prompt": "Add a flag"})
    r.raise_for_status()
    wid = r.json()["id"]
    q = events.queue(wid)
    step, checkpoint_id, _ = await q.get()
    assert step == PLAN_READY, step
    sent = time.perf_counter()
    r = await client.post(f"/api/checkpoints/{checkpoint_id}/resolve", json={"action": "approve"})
    r.raise_for_status()
    step, checkpoint_id, received = await q.get()
    assert step == REVIEWS_READY, step
    latencies.append(received - sent)
    r = await client.post(f"/api/checkpoints/{checkpoint_id}/resolve", json={"action": "approve"})
    r.raise_for_status()
    del events.waiting[wid]


async def plan_review(base_url: str, token: str, n: int, concurrency: int) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency + 5)
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=60, limits=limits
    ) as client:
        start_id = await _last_event_id(client)
        events = Dispatcher()
        reader = asyncio.create_task(events.run(client, start_id))
        latencies: list[float] = []
        todo = iter(range(n))

        async def lane() -> None:
            for _ in todo:
                await one_workflow(client, events, latencies)

        started = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        reader.cancel()
    return {
        "workflows_per_s": n / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
    }


async def _last_event_id(client: httpx.AsyncClient) -> int:
    page = await client.get("/api/workflows", params={"limit": 1})
    page.raise_for_status()
    items = page.json()["items"]
    if not items:
        return 0
    events = await client.get(f"/api/workflows/{items[0]['id']}/events", params={"limit": 5000})
    ids = [e["id"] for e in events.json()["items"]]
    return max(ids, default=0)


# -- 3: SSE fan-out -----------------------------------------------------------


async def subscriber(
    host: str, port: int, token: str, after: int, ready: asyncio.Event, samples: list[float]
) -> None:
    """A lean SSE client on a raw socket (httpx would cost the client more CPU than
    the server spends), recording commit → receipt delay per event."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"GET /api/events/stream?after={after} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    status = await reader.readline()
    assert b" 200 " in status, status
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    ready.set()
    buffer = b""
    try:
        while True:
            size = int((await reader.readline()).strip() or b"0", 16)
            chunk = await reader.readexactly(size + 2)
            buffer += chunk[:-2]
            *frames, buffer = buffer.split(b"\n\n")
            now = time.time()
            for frame in frames:
                at = frame.rfind(b'"created_at":"')
                if at < 0:
                    continue  # a keep-alive comment
                stamp = frame[at + 14 : frame.index(b'"', at + 14)].decode()
                samples.append(now - datetime.fromisoformat(stamp).timestamp())
    finally:
        writer.close()


async def fan_out(
    base_url: str, token: str, subscribers: int, events: int, rate: float
) -> dict[str, float]:
    host, port = base_url.removeprefix("http://").split(":")
    samples: list[float] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
        after = await _last_event_id(client)
    readies = [asyncio.Event() for _ in range(subscribers)]
    tasks = [
        asyncio.create_task(subscriber(host, int(port), token, after, ready, samples))
        for ready in readies
    ]
    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(r.wait() for r in readies))
        await asyncio.sleep(0.5)
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
            for _ in range(events):
                started = time.perf_counter()
                r = await client.post("/api/workflows", json={"name": "fan", "prompt": "p"})
                r.raise_for_status()
                await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - started)))
        deadline = time.monotonic() + 10
        while len(samples) < subscribers * events and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    delivered = len(samples) / (subscribers * events)
    return {
        "subscribers": subscribers,
        "delivered": delivered,
        "p50_ms": statistics.median(samples) * 1000 if samples else float("nan"),
        "p99_ms": pct(samples, 0.99) * 1000 if samples else float("nan"),
    }


# -- main ---------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflows", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--latency-samples", type=int, default=50)
    parser.add_argument("--subscribers", default="100,250,500,1000")
    parser.add_argument("--fanout-events", type=int, default=40)
    parser.add_argument("--fanout-rate", type=float, default=10.0, help="events per second")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))

    with tempfile.TemporaryDirectory(prefix="orchestra-http-bench-") as tmp:
        work = Path(tmp)
        url = fresh_sqlite(work)
        token = make_tokens(url, {"bench": Role.ADMIN})["bench"]
        env = {"ORCHESTRA_LOG_LEVEL": "WARNING"}
        print(f"Plan & Review over HTTP, SQLite, instant demo agents ({args.workflows} workflows)")
        with running_server(url, work / "srv", env=env) as server:
            asyncio.run(plan_review(server.base_url, token, 20, args.concurrency))  # warm up
            loaded = asyncio.run(
                plan_review(server.base_url, token, args.workflows, args.concurrency)
            )
            idle = asyncio.run(plan_review(server.base_url, token, args.latency_samples, 1))
        print(f"  concurrency {args.concurrency}: {loaded['workflows_per_s']:.1f} workflows/s")
        print(
            f"  resolve → next checkpoint on SSE, under that load: "
            f"p50 {loaded['p50_ms']:.1f} ms, p99 {loaded['p99_ms']:.1f} ms"
        )
        print(
            f"  resolve → next checkpoint on SSE, one at a time:   "
            f"p50 {idle['p50_ms']:.1f} ms, p99 {idle['p99_ms']:.1f} ms "
            f"({idle['workflows_per_s']:.1f} workflows/s)"
        )

        (work / "fan").mkdir()
        url2 = fresh_sqlite(work / "fan")
        token2 = make_tokens(url2, {"bench": Role.ADMIN})["bench"]
        print(
            f"SSE fan-out on /api/events/stream ({args.fanout_events} events at "
            f"{args.fanout_rate:g}/s per level, no worker)"
        )
        held = 0
        with running_server(url2, work / "srv2", env=env, args=["--no-worker"]) as server:
            for n in (int(x) for x in args.subscribers.split(",")):
                result = asyncio.run(
                    fan_out(server.base_url, token2, n, args.fanout_events, args.fanout_rate)
                )
                ok = result["delivered"] == 1.0 and result["p99_ms"] <= P99_TARGET_S * 1000
                held = n if ok else held
                print(
                    f"  {n:5d} subscribers: delivered {result['delivered']:.1%}, "
                    f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms"
                    f"{'' if ok else '  (over target)'}"
                )
        print(f"  held with p99 ≤ {P99_TARGET_S * 1000:.0f} ms: {held} subscribers")


if __name__ == "__main__":
    main()
