"""Worker processes for crash tests: started on a database URL, SIGKILLed at will.

The ``spawn`` fixture starts :mod:`tests.support.worker_process` programs and
stops every one at the end of the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "support" / "worker_process.py"


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    def log(self) -> str:
        return self.err.read_text(errors="replace")[-4000:]

    async def ready(self) -> None:
        async def said_ready() -> bool:
            assert self.proc.poll() is None, f"worker exited early:\n{self.log()}"
            return "ready" in self.out.read_text()

        await eventually(said_ready, what="the worker process to start")

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it does not end; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    """Start worker processes on a database URL; every one is stopped at the end."""
    started: list[WorkerProcess] = []

    def run(url: str, *args: str) -> WorkerProcess:
        n = len(started)
        out, err = tmp_path / f"worker{n}.out", tmp_path / f"worker{n}.err"
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen(
                [sys.executable, str(SCRIPT), url, *args],
                stdout=o,
                stderr=e,
                cwd=ROOT,
                start_new_session=True,  # signals to pytest's group do not reach it
            )
        started.append(WorkerProcess(proc, out, err))
        return started[-1]

    yield run
    for worker in started:
        worker.stop()
