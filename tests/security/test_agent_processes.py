"""Attack: an agent starts a process that calls ``setsid`` (leaves the agent's process
group, as a daemon does) and it survived the run's timeout or cancellation, against
the README's "nothing it started survives". Now every process below the agent in the
process tree, or carrying the run's ``ORCHESTRA_AGENT_RUN`` marker, is ended too;
an unrelated process of the same user is left alone. Linux (``/proc``) only."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestra.agents.base import AgentFailure
from orchestra.agents.subprocess_runner import RUN_MARKER, run_process
from tests.support.waiting import eventually

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

#: The fake agent: a child leaves the session (``double_fork``: through a middle
#: process that writes its pid and exits at once, so the daemon is an orphan before
#: the run ends), drops its pipes, writes its pid and sleeps; the agent then hangs,
#: or exits (``exit``).
AGENT = r"""
import os, sys, time
mode, pid_file = sys.argv[1], sys.argv[2]
if os.fork() == 0:
    if mode == "double_fork":
        with open(pid_file + ".middle", "w") as f:
            f.write(str(os.getpid()))
        if os.fork() != 0:
            os._exit(0)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    with open(pid_file + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(pid_file + ".tmp", pid_file)
    time.sleep(1000)
    os._exit(0)
while not os.path.exists(pid_file):
    time.sleep(0.01)
print("daemon started", flush=True)
if mode == "exit":
    sys.exit(0)
time.sleep(1000)
"""


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def gone(pid: int) -> None:
    await eventually(lambda: not alive(pid), what=f"process {pid} to end")


async def daemon_pid(pid_file: Path) -> int:
    """The daemon's pid, once it has written it (atomically: a file that exists is whole)."""
    await eventually(pid_file.exists, what="the fake agent's daemon to start")
    return int(pid_file.read_text())


def agent(tmp_path: Path, mode: str) -> tuple[list[str], Path]:
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    pid_file = tmp_path / f"daemon-{mode}.pid"
    return [sys.executable, str(script), mode, str(pid_file)], pid_file


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """A process of the same user in its own session, started by no agent: it must live."""
    proc = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("mode", ["setsid", "double_fork"])
async def test_a_setsid_grandchild_ends_with_a_timeout(
    tmp_path: Path, mode: str, bystander: subprocess.Popen[bytes]
) -> None:
    argv, pid_file = agent(tmp_path, mode)
    with pytest.raises(AgentFailure) as caught:
        await run_process(argv, stdin_data=b"", on_line=lambda _: None, timeout_s=3, grace_s=0.5)
    assert caught.value.reason == "timeout"
    await gone(int(pid_file.read_text()))
    assert alive(bystander.pid)


@pytest.mark.parametrize("mode", ["setsid", "double_fork"])
async def test_a_setsid_grandchild_ends_with_a_cancel(
    tmp_path: Path, mode: str, bystander: subprocess.Popen[bytes]
) -> None:
    argv, pid_file = agent(tmp_path, mode)
    task = asyncio.create_task(
        run_process(argv, stdin_data=b"", on_line=lambda _: None, timeout_s=120, grace_s=0.5)
    )
    daemon = await daemon_pid(pid_file)
    if mode == "double_fork":  # cancel only once the daemon is an orphan
        await gone(int(Path(f"{pid_file}.middle").read_text()))
    assert alive(daemon)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await gone(daemon)
    assert alive(bystander.pid)


async def test_a_setsid_grandchild_ends_when_the_agent_exits(tmp_path: Path) -> None:
    argv, pid_file = agent(tmp_path, "exit")
    lines: list[str] = []
    outcome = await run_process(argv, stdin_data=b"", on_line=lines.append, timeout_s=60)
    assert outcome.returncode == 0 and lines == ["daemon started"]
    await gone(int(pid_file.read_text()))


async def test_each_run_has_its_own_marker(tmp_path: Path) -> None:
    script = tmp_path / "marker.py"
    script.write_text(f"import os; print(os.environ[{RUN_MARKER!r}])")
    markers: list[str] = []
    for _ in range(2):
        await run_process(
            [sys.executable, str(script)],
            stdin_data=b"",
            on_line=markers.append,
            timeout_s=30,
            env={"PATH": os.environ.get("PATH", "")},
        )
    assert len(markers) == 2 and markers[0] != markers[1] and all(len(m) >= 32 for m in markers)


#: A server that is PID 1 in a container, or a subreaper, becomes the parent of every
#: orphan: this one runs an agent whose daemon is orphaned, times it out, and prints
#: its own zombie children afterwards (each would stay for ever: nobody else reaps).
SUBREAPER = r"""
import asyncio, ctypes, os, sys, time
from pathlib import Path
from orchestra.agents.base import AgentFailure
from orchestra.agents.subprocess_runner import run_process
PR_SET_CHILD_SUBREAPER = 36
assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
async def main():
    try:
        await run_process(sys.argv[1:], stdin_data=b"", on_line=lambda _: None,
                          timeout_s=3, grace_s=0.5)
    except AgentFailure as exc:
        assert exc.reason == "timeout", exc
asyncio.run(main())
time.sleep(0.5)  # a check for absence: an orphan killed but not reaped is a zombie by now
me, zombies = os.getpid(), []
for entry in Path("/proc").iterdir():
    if entry.name.isdigit():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] == "Z":
            zombies.append(int(entry.name))
print("zombies:", zombies)
"""


def test_no_zombie_is_left_when_the_server_is_the_orphans_parent(tmp_path: Path) -> None:
    argv, pid_file = agent(tmp_path, "double_fork")
    script = tmp_path / "subreaper.py"
    script.write_text(SUBREAPER)
    done = subprocess.run(
        [sys.executable, str(script), *argv],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "zombies: []" in done.stdout, done.stdout
    assert not alive(int(pid_file.read_text()))
