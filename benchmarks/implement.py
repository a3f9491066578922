"""Implement & Review latency: how long a person waits after approving, on a real
git repository, with the offline demo agents (instant), on SQLite and PostgreSQL.

For each of ``--n`` workflows started from a plan given as text (so the figures
are the implementation's own): from the person's approval of a change request
(``request_changes``) to the implementer's run being recorded as started, and to
its agent actually starting (after the worktree is reset to the last snapshot);
the git work around each iteration (worktree, snapshot, diff); and from the
approved commit message to the commit on the branch (workflow completed).

    python benchmarks/implement.py [--n 30] [--pg postgresql://…/test]

There is no peer to run side by side: no tool of this kind snapshots an
implementer's worktree per iteration, so the figures are absolute (ms, p50/p99).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from orchestra.domain.models import Decision
from orchestra.engine.runner import WorkerSettings
from orchestra.service import Orchestra
from orchestra.store.db import Database
from orchestra.store.migrate import upgrade
from orchestra.workflows import implement_work, plan_implement

_timings: dict[str, list[float]] = {"prepare": [], "capture": []}


def _timed(name: str, fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _timings[name].append((time.perf_counter() - started) * 1000)

    return wrapper


def _repo(path: Path) -> Path:
    path.mkdir(parents=True)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "first"]):
        if args[0] == "add":
            for i in range(50):  # a small project: 50 files
                (path / f"module_{i}.py").write_text(f"VALUE = {i}\n" * 40)
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True)
    return path


async def _pending(service: Orchestra, workflow_id: str) -> Any:
    while True:
        wf = await service.get_workflow(workflow_id)
        if wf.pending_checkpoint is not None:
            return wf.pending_checkpoint
        await asyncio.sleep(0.002)


async def _run(url: str, n: int, tmp: Path) -> dict[str, list[float]]:
    db = Database(url)
    upgrade(db.write_engine)
    ws = _repo(tmp / "ws")
    service = Orchestra(db, allowed_roots=[tmp], worker=WorkerSettings(poll_s=0.05))
    stop = asyncio.Event()
    worker_task = asyncio.create_task(service.engine.run(stop))
    found: dict[str, list[float]] = {"approve→run started": [], "commit→done": []}
    try:
        for i in range(n):
            wf = await service.create_workflow(
                name=f"bench {i}",
                prompt="Write the demo file",
                type="plan_implement",
                workspace_path=str(ws),
                options={"plan": "Write the demo file."},
            )
            cp = await _pending(service, wf.id)
            started = time.perf_counter()
            await service.resolve(cp.id, Decision(action="request_changes"), actor="bench")
            while True:
                runs = [
                    r
                    for r in (await service.history(wf.id)).agent_runs
                    if r.step_name == "implement"
                ]
                if len(runs) == 2:
                    break
                await asyncio.sleep(0.001)
            found["approve→run started"].append((time.perf_counter() - started) * 1000)
            cp = await _pending(service, wf.id)
            await service.resolve(cp.id, Decision(action="approve"), actor="bench")
            cp = await _pending(service, wf.id)
            started = time.perf_counter()
            await service.resolve(cp.id, Decision(action="commit"), actor="bench")
            while (await service.get_workflow(wf.id)).status.value != "completed":
                await asyncio.sleep(0.002)
            found["commit→done"].append((time.perf_counter() - started) * 1000)
    finally:
        stop.set()
        await worker_task
        db.close()
    return found


def _line(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"  {name:<34} p50 {statistics.median(ordered):7.1f} ms   p99 {p99:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    # The workflow calls these by their names in its module: time them there.
    plan_implement.prepare_implementer = _timed("prepare", implement_work.prepare_implementer)
    plan_implement.capture_implementer = _timed("capture", implement_work.capture_implementer)
    for label, make_url in (
        ("SQLite", lambda tmp: f"sqlite:///{tmp / 'bench.db'}"),
        ("PostgreSQL", lambda _: args.pg),
    ):
        for timings in _timings.values():
            timings.clear()
        with tempfile.TemporaryDirectory() as tmp:
            found = asyncio.run(_run(make_url(Path(tmp)), args.n, Path(tmp)))
        print(f"{label}, {args.n} workflows (demo agents, a 50-file repository):")
        for name, values in found.items():
            print(_line(name, values))
        print(_line("git: worktree reset (prepare)", _timings["prepare"]))
        print(_line("git: snapshot + diff (capture)", _timings["capture"]))


if __name__ == "__main__":
    main()
