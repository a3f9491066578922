"""Run an agent CLI as a child process, safely and completely, for every CLI adapter.

The agent CLIs have pitfalls seen in the wild (see the reference on their
headless formats); handling them once here keeps each adapter down to its
command line and its output format:

- never a shell and never the prompt in argv (shell injection, ``E2BIG``): the
  prompt goes to stdin, which is then closed (an open stdin makes
  ``claude -p`` and ``codex exec`` wait forever);
- the child leads its own process group, and on timeout or cancellation the
  whole group gets SIGTERM, then SIGKILL, so no grandchild survives holding
  the pipes; so does, on Linux, every process that left the group
  (``setsid``, a daemon's double fork): each one still below the agent in the
  process tree, or carrying the run's ``ORCHESTRA_AGENT_RUN`` marker in its
  environment (see :class:`_RunProcesses`);
- stdout is read in chunks and split into lines here, so a JSONL line over
  asyncio's 64 KiB line limit, or megabytes of output, arrive intact;
- stderr is diagnostics: only its tail is kept, for the person deciding what
  to do about a failure;
- Orchestra's own secrets and ``CLAUDECODE`` never reach the child; on top of
  the rest of our environment come the CLI's quiet defaults (telemetry and
  update checks off, bounded retries), the agent's own ``home`` and the
  agent's ``env`` table from the agents file (see :func:`agent_environment`).

Generic helpers shared with the HTTP adapters (option checks, progress
clipping, structured-answer parsing) live here too, so there is one copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import re
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Protocol

from orchestra.agents.base import (
    JSON,
    AgentCheck,
    AgentFailure,
    AgentRequest,
    AgentResult,
    ProgressSink,
)
from orchestra.domain.errors import InvalidInput
from orchestra.domain.untrusted import UntrustedJSON, loads_bounded

log = logging.getLogger(__name__)

#: Bytes read from stdout at a time; lines are split by us, so no line limit.
CHUNK_BYTES = 64 * 1024
#: How much of stderr is kept for the person reading a failure.
STDERR_TAIL_BYTES = 4096
#: Progress texts are one short line; the engine stores many of them.
PROGRESS_MAX_CHARS = 200
#: Time a process group gets between SIGTERM and SIGKILL.
DEFAULT_GRACE_S = 2.0
#: ``claude -v`` and friends answer at once; a hang here means a broken install.
CHECK_TIMEOUT_S = 15.0
#: How often we look whether the group leader has exited (see ``_leader_exit``).
_EXIT_POLL_S = 0.05

#: Set in every agent's environment to a random value per run (not a secret): how the
#: processes it started are found again, even outside its process group.
RUN_MARKER = "ORCHESTRA_AGENT_RUN"
#: Rounds of "find and SIGKILL" at the end of a run, for processes forked meanwhile.
_KILL_ROUNDS = 5
#: How long a killed process of ours gets to become reapable (a SIGKILL is not instant).
_REAP_WAIT_S = 1.0
_PROC = Path("/proc")

_SCRUBBED_NAMES = frozenset({"CLAUDECODE", "DATABASE_URL"})
_SCRUBBED_PREFIXES = ("ORCHESTRA_",)

#: Options every CLI adapter accepts, on top of its own. ``env`` is filled from the
#: agent's ``[agents.NAME.env]`` table by the agents file loader (see agents/config.py).
CLI_COMMON_OPTIONS = frozenset({"path", "extra_args", "kill_grace_s", "env", "home"})

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

LineHandler = Callable[[str], None]


# -- small helpers shared by every adapter -------------------------------------------------


def clip(text: str, limit: int = PROGRESS_MAX_CHARS) -> str:
    """The first non-blank line of ``text``, cut to ``limit`` characters, for progress."""
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def describe_call(name: str, arguments: object) -> str:
    """``name`` plus its most telling argument (a command, a path…), for progress."""
    detail = ""
    if isinstance(arguments, Mapping):
        for key in ("command", "file_path", "path", "pattern", "url", "query", "description"):
            value = arguments.get(key)
            if isinstance(value, str) and value.strip():
                detail = value
                break
        else:
            detail = json.dumps(arguments, separators=(",", ":"), default=str) if arguments else ""
    return clip(f"{name} {detail}".strip())


#: A JSONL line longer than this is refused unparsed (a real event is far smaller).
MAX_JSON_LINE_CHARS = 64_000_000


def parse_json_line(line: str, source: str) -> JSON | None:
    """One JSONL event, or ``None`` for a blank or foreign line (logged, not fatal).

    A line beyond the bounds (nested deeper than :data:`AGENT_JSON_DEPTH`, or
    longer than :data:`MAX_JSON_LINE_CHARS`) raises :class:`UntrustedJSON`: the
    runner skips it and names it if the answer then turns out to be missing.
    """
    if not line.strip():
        return None
    try:
        value = loads_bounded(line, max_chars=MAX_JSON_LINE_CHARS)
    except UntrustedJSON as exc:
        if str(exc).startswith("not JSON"):
            log.debug("%s: ignoring a line that is not JSON: %.200s", source, line)
            return None
        raise UntrustedJSON(f"{source} printed a line of {exc}") from None
    if not isinstance(value, dict):
        log.debug("%s: ignoring a JSON line that is not an object", source)
        return None
    return value


def structured_from_text(text: str) -> JSON | None:
    """The JSON object an agent answered with, when its whole answer is one.

    Deliberately strict (plain JSON, or one fenced block): a lenient parser for
    answers that mix prose and JSON belongs to the review parsing, not here.
    Beyond the bounds (size, depth) the answer is plain text.
    """
    body = text.strip()
    if body.startswith("```") and body.endswith("```"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
        body = body[: body.rfind("```")].strip()
    try:
        value = loads_bounded(body)
    except UntrustedJSON:
        return None
    return value if isinstance(value, dict) else None


def as_dict(value: object) -> JSON:
    """``value`` when agent output put an object there, else an empty one."""
    return value if isinstance(value, dict) else {}


def as_int(value: object) -> int | None:
    """An integer from agent output, or ``None`` when absent or not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def sum_ints(values: Iterable[object]) -> int | None:
    """The sum of the numbers among ``values``; ``None`` when there is none."""
    numbers = [n for n in (as_int(v) for v in values) if n is not None]
    return sum(numbers) if numbers else None


def check_options(adapter: str, options: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Refuse option names an adapter does not know: a typo must not be ignored."""
    known = set(allowed)
    unknown = sorted(set(options) - known)
    if unknown:
        raise InvalidInput(
            f"unknown option(s) {', '.join(unknown)} for the {adapter} adapter; "
            f"known options: {', '.join(sorted(known))}",
            details={"adapter": adapter, "unknown": unknown},
        )


def opt_str(adapter: str, options: Mapping[str, Any], key: str) -> str | None:
    """An optional string option."""
    value = options.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"option {key!r} of the {adapter} adapter must be a string")
    return value


def opt_number(adapter: str, options: Mapping[str, Any], key: str, default: float) -> float:
    """An optional non-negative number option."""
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise InvalidInput(f"option {key!r} of the {adapter} adapter must be a number >= 0")
    return float(value)


def opt_str_list(adapter: str, options: Mapping[str, Any], key: str) -> list[str]:
    """A list-of-strings option; a comma-separated string is accepted too."""
    value = options.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidInput(f"option {key!r} of the {adapter} adapter must be a list of strings")


# -- locating and running a program --------------------------------------------------------


def scrubbed_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for an agent: ours, minus Orchestra's secrets and ``CLAUDECODE``.

    ``CLAUDECODE`` makes a nested ``claude`` refuse to start; ``ORCHESTRA_*``
    and ``DATABASE_URL`` are ours (tokens, the database) and no agent needs them.
    """
    source = os.environ if base is None else base
    return {
        key: value
        for key, value in source.items()
        if key not in _SCRUBBED_NAMES and not key.startswith(_SCRUBBED_PREFIXES)
    }


def is_scrubbed(name: str) -> bool:
    """Whether ``name`` is one of Orchestra's own variables, which no agent gets."""
    return name in _SCRUBBED_NAMES or name.startswith(_SCRUBBED_PREFIXES)


def opt_env(adapter: str, options: Mapping[str, Any]) -> dict[str, str | dict[str, str]]:
    """The agent's ``env`` table: ``NAME = "value"`` or ``NAME = { from_env = "VAR" }``.

    A reference is kept as a reference and looked up when the agent starts, so a
    secret stays in the server's environment and never lands in the database.
    References to Orchestra's own variables (``ORCHESTRA_*``, ``DATABASE_URL``)
    are refused: those are the server's secrets.
    """
    value = options.get("env")
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(f"the env of a {adapter} agent must be a table of NAME = value")
    table: dict[str, str | dict[str, str]] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise InvalidInput(
                f"env variable name {name!r} of a {adapter} agent is not a valid name "
                "(letters, digits and _, not starting with a digit)"
            )
        if is_scrubbed(name):
            raise InvalidInput(f"env variable {name} is Orchestra's own; no agent may set it")
        if isinstance(item, str):
            table[name] = item
            continue
        source = item.get("from_env") if isinstance(item, Mapping) else None
        if (
            not isinstance(item, Mapping)
            or set(item) != {"from_env"}
            or not isinstance(source, str)
            or not _ENV_NAME.match(source)
        ):
            raise InvalidInput(
                f"env variable {name} of a {adapter} agent must be a string or "
                '{ from_env = "VARIABLE" } naming one of the server\'s variables'
            )
        if is_scrubbed(source):
            raise InvalidInput(
                f"env variable {name} of a {adapter} agent refers to {source}, one of "
                "Orchestra's own variables; agents never get those"
            )
        table[name] = {"from_env": source}
    return table


def agent_environment(
    table: Mapping[str, str | Mapping[str, str]],
    *,
    defaults: Mapping[str, str] | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment an agent starts with, later layers winning:
    ours scrubbed (:func:`scrubbed_env`), the CLI's ``defaults``, the agent's ``table``.

    A ``from_env`` reference to a variable the server does not have is a
    failure that says which one, rather than an agent started without its key.
    """
    source = os.environ if base is None else base
    env = scrubbed_env(source)
    env.update(defaults or {})
    for name, item in table.items():
        if isinstance(item, str):
            env[name] = item
            continue
        wanted = item["from_env"]
        if wanted not in source:
            raise AgentFailure(
                "agent_error",
                f"the agent's env variable {name} comes from the server's {wanted}, "
                "which is not set; set it where Orchestra runs, or fix the agents file",
                retryable=False,
            )
        env[name] = source[wanted]
    return env


def locate_program(default_name: str, configured: str | None) -> str:
    """The absolute path of the agent's program, or ``not_installed``.

    ``configured`` is the agent's ``path`` option: a path, or a name to look up on PATH.
    """
    wanted = os.path.expanduser(configured) if configured else default_name
    found = shutil.which(wanted)
    if found is None:
        if configured:
            message = (
                f"{default_name}: {configured!r} was not found or is not executable; "
                "fix the agent's `path` option"
            )
        else:
            message = (
                f"{default_name} is not installed or not on PATH; set the agent's `path` option"
            )
        raise AgentFailure("not_installed", message, retryable=False)
    return os.path.abspath(found)


@dataclass(frozen=True)
class ProcessOutcome:
    """How a finished child process ended."""

    returncode: int
    stderr_tail: str
    stdout_bytes: int
    duration_ms: int


class _Tail:
    """The last ``limit`` bytes of a stream."""

    def __init__(self, limit: int = STDERR_TAIL_BYTES) -> None:
        self.limit = limit
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > self.limit:
            del self.data[: len(self.data) - self.limit]

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


async def _feed_stdin(stream: asyncio.StreamWriter | None, data: bytes) -> None:
    """Write the prompt and close stdin, so the agent sees end of input."""
    if stream is None:
        return
    try:
        stream.write(data)
        await stream.drain()
    except (BrokenPipeError, ConnectionResetError):
        # The agent exited without reading its input; its exit code tells why.
        log.debug("agent closed its stdin before reading the whole prompt")
    finally:
        stream.close()


async def _read_lines(stream: asyncio.StreamReader | None, on_line: LineHandler) -> int:
    """Read stdout to the end in chunks, handing each complete line to ``on_line``."""
    if stream is None:
        return 0
    total = 0
    pending = bytearray()

    def deliver(raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        try:
            on_line(line)
        except Exception:
            # A parser bug must not stop us reading (the child would block on a full pipe).
            log.exception("agent output line handler failed on a %d-byte line", len(raw))

    while chunk := await stream.read(CHUNK_BYTES):
        total += len(chunk)
        start = len(pending)
        pending += chunk
        newline = pending.find(b"\n", start)
        if newline < 0:
            continue
        lines = pending.split(b"\n")
        pending = bytearray(lines.pop())
        for raw in lines:
            deliver(bytes(raw))
    if pending:
        deliver(bytes(pending))
    return total


async def _read_tail(stream: asyncio.StreamReader | None, tail: _Tail) -> None:
    if stream is None:
        return
    while chunk := await stream.read(CHUNK_BYTES):
        tail.add(chunk)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class _Proc(NamedTuple):
    """What ``/proc/<pid>/stat`` says about a process (a zombie has one too)."""

    ppid: int
    start: int  # clock ticks after boot: with the pid, names one process for good
    state: str
    pgrp: int

    @property
    def live(self) -> bool:
        return self.state not in ("Z", "X")  # a zombie is dead, only not yet reaped


def _stat(pid: int) -> _Proc | None:
    """``pid``'s entry in ``/proc``; ``None`` when it is gone (or there is no ``/proc``)."""
    try:
        stat = (_PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    fields = stat.rsplit(b")", 1)[-1].split()  # the name may hold spaces and ")"
    try:
        # fields[0] is stat's 3rd field (state): ppid [1], pgrp [2], starttime [19]
        return _Proc(int(fields[1]), int(fields[19]), fields[0].decode(), int(fields[2]))
    except (IndexError, ValueError):
        return None


def _process_table() -> dict[int, _Proc]:
    """Every visible process (empty without ``/proc``: elsewhere only the process
    group is stopped)."""
    try:
        names = [e.name for e in os.scandir(_PROC) if e.name.isdigit()]
    except OSError:
        return {}
    table: dict[int, _Proc] = {}
    for name in names:
        found = _stat(int(name))
        if found is not None:
            table[int(name)] = found
    return table


def _carries(pid: int, entry: bytes) -> bool:
    """Whether the environment ``pid`` was started with holds ``entry`` (``NAME=value``)."""
    try:
        environ = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return False  # gone, or another user's
    return entry in environ.split(b"\0")


class _RunProcesses:
    """Everything one agent run started: its group, its process tree, and every
    process that carries the run's marker in its environment.

    Processes are told apart by (pid, start time), so a pid the kernel reused for
    somebody else's process is never signalled. Reading ``/proc`` costs a few ms per
    hundred processes, so the stop runs it in a thread (a lock keeps two at bay).
    """

    def __init__(self, marker: str) -> None:
        self.entry = f"{RUN_MARKER}={marker}".encode()
        self.leader: tuple[int, int] | None = None
        #: Every process of the run ever found, zombies included: pid → start time.
        self.known: dict[int, int] = {}
        self._lock = threading.Lock()

    def started(self, pid: int) -> None:
        """Note the agent itself (its start time proves the pid still is ours later)."""
        found = _stat(pid)
        if found is not None:
            self.leader = (pid, found.start)

    def _is(self, table: Mapping[int, _Proc], pid: int, start: int) -> bool:
        found = table.get(pid)
        return found is not None and found.start == start

    def _find(self) -> dict[int, int]:
        """The run's live processes now: pid → start time (remembered for later)."""
        table = _process_table()
        ours: dict[int, int] = {}
        if self.leader is not None and self._is(table, *self.leader):
            children: dict[int, list[int]] = {}
            for pid, proc in table.items():
                children.setdefault(proc.ppid, []).append(pid)
            todo = [self.leader[0]]
            while todo:
                for child in children.get(todo.pop(), []):
                    if child not in ours:
                        ours[child] = table[child].start
                        todo.append(child)
        for pid, proc in table.items():
            if pid not in ours and proc.live and _carries(pid, self.entry):
                ours[pid] = proc.start
        for pid, start in self.known.items():  # found before; their parent may have died since
            if pid not in ours and self._is(table, pid, start):
                ours[pid] = start
        ours.pop(os.getpid(), None)
        self.known.update(ours)
        return {p: s for p, s in ours.items() if table[p].live}

    @staticmethod
    def _signal(found: Mapping[int, int], sig: signal.Signals) -> None:
        for pid, start in found.items():
            now = _stat(pid)
            if now is not None and now.start == start:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)

    def terminate(self) -> None:
        """SIGTERM every process of the run (call it while the agent still runs: its
        tree is complete then)."""
        with self._lock:
            self._signal(self._find(), signal.SIGTERM)

    def kill_all(self) -> None:
        """SIGKILL every process of the run, looking again for new ones (a process may
        fork between a look and a kill); bounded, so a fork bomb cannot hold us here.
        A SIGKILL cannot be refused, so a process signalled once is not counted again."""
        with self._lock:
            killed: dict[int, int] = {}
            for _ in range(_KILL_ROUNDS):
                fresh = {p: s for p, s in self._find().items() if killed.get(p) != s}
                if not fresh:
                    break
                self._signal(fresh, signal.SIGKILL)
                killed.update(fresh)
            else:
                log.warning(
                    "agent processes kept appearing after %d rounds of SIGKILL", _KILL_ROUNDS
                )
            self._reap()

    def _reap(self) -> None:
        """Collect the run's ended processes whose parent we became (the server runs as
        PID 1 in a container, or as a subreaper): nobody else would, so each would stay
        a zombie. Those are the ones found before, and the agent's group's zombies.
        Never the agent itself, which asyncio waits for; never a pid whose start time
        differs (a pid reaped elsewhere and reused)."""
        me = os.getpid()
        leader = self.leader[0] if self.leader is not None else None
        table = _process_table()
        mine = {
            pid
            for pid, proc in table.items()
            if proc.ppid == me
            and pid != leader
            and (self._is(table, pid, self.known.get(pid, -1)) or proc.pgrp == leader)
        }
        deadline = time.monotonic() + _REAP_WAIT_S
        while mine:
            for pid in list(mine):
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
                    mine.discard(pid)
            if not mine or time.monotonic() > deadline:
                break
            time.sleep(0.01)


async def _leader_exit(proc: asyncio.subprocess.Process) -> int:
    """Wait until the child itself has exited.

    ``Process.wait()`` also waits until every pipe is closed, which a grandchild
    still holding stdout can delay forever; ``returncode`` is set as soon as the
    child is reaped.
    """
    while proc.returncode is None:
        await asyncio.sleep(_EXIT_POLL_S)
    return proc.returncode


async def _stop_group(
    proc: asyncio.subprocess.Process, grace_s: float, run: _RunProcesses | None = None
) -> None:
    """SIGTERM everything the run started (its group, and ``run``'s other processes),
    give the child ``grace_s`` to exit, then SIGKILL all of it.

    The SIGKILL goes out even when the child obeyed, for grandchildren that did
    not; it is sent in ``finally``, and the search for the run's processes runs on in
    its thread, so a second cancellation cannot skip it. When the child has already
    exited, what it left behind is killed at once.
    """
    pgid = proc.pid  # start_new_session: the child leads its own group
    try:
        if run is not None:  # first: the process tree is whole while the child lives
            await asyncio.to_thread(run.terminate)
        _signal_group(pgid, signal.SIGTERM)
        if proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_leader_exit(proc), grace_s)
    finally:
        _signal_group(pgid, signal.SIGKILL)
        if run is not None:
            await asyncio.shield(asyncio.to_thread(run.kill_all))


async def _settle(
    proc: asyncio.subprocess.Process, tasks: Sequence[asyncio.Task[Any]], grace_s: float
) -> None:
    """Let the pipe tasks finish reading what is left, then release everything."""
    _, pending = await asyncio.wait(tasks, timeout=grace_s) if tasks else (set(), set())
    if pending:
        # Something outside the group (a daemon that left it) holds a pipe open.
        log.warning("agent pid %d: a pipe stayed open after the process group ended", proc.pid)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        transport = getattr(proc, "_transport", None)
        if transport is not None:
            transport.close()
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning("agent pid %d: pipe task failed: %r", proc.pid, task.exception())


async def run_process(
    argv: Sequence[str],
    *,
    stdin_data: bytes,
    on_line: LineHandler,
    timeout_s: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    grace_s: float = DEFAULT_GRACE_S,
) -> ProcessOutcome:
    """Run ``argv`` with ``stdin_data`` on stdin; every stdout line goes to ``on_line``.

    Raises ``AgentFailure("timeout")`` after ``timeout_s``; on cancellation the
    process group is stopped before ``CancelledError`` propagates. When the
    child exits normally, whatever it left running in its group is stopped too.
    """
    started = time.monotonic()
    marker = secrets.token_hex(16)
    child_env = dict(scrubbed_env() if env is None else env)
    child_env[RUN_MARKER] = marker  # after the scrub, which drops every ORCHESTRA_*
    run = _RunProcesses(marker)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env=child_env,
            start_new_session=True,
        )
    except OSError as exc:
        raise AgentFailure(
            "not_installed",
            f"could not start {argv[0]}: {exc.strerror or exc}; check the agent's `path` option",
            retryable=False,
        ) from exc
    run.started(proc.pid)
    log.debug("started agent pid %d: %s", proc.pid, argv[0])
    tail = _Tail()
    stdin_task = asyncio.create_task(_feed_stdin(proc.stdin, stdin_data))
    stdout_task = asyncio.create_task(_read_lines(proc.stdout, on_line))
    stderr_task = asyncio.create_task(_read_tail(proc.stderr, tail))
    try:
        async with asyncio.timeout(timeout_s):
            returncode = await _leader_exit(proc)
        # Anything it left behind in its group would hold our pipes open.
        await _stop_group(proc, grace_s, run)
    except TimeoutError:
        log.warning("agent pid %d timed out after %gs; stopping its group", proc.pid, timeout_s)
        await _stop_group(proc, grace_s, run)
        await _settle(proc, [stdin_task, stdout_task, stderr_task], grace_s)
        raise AgentFailure(
            "timeout",
            f"{Path(argv[0]).name} gave no complete answer within {timeout_s:g}s and was stopped",
            stderr_tail=tail.text(),
        ) from None
    except BaseException:
        # Cancellation (or a bug of ours): nothing of the group may outlive the run.
        log.info("agent pid %d: run interrupted; stopping its group", proc.pid)
        await _stop_group(proc, grace_s, run)
        await _settle(proc, [stdin_task, stdout_task, stderr_task], grace_s)
        raise
    await _settle(proc, [stdin_task, stdout_task, stderr_task], grace_s)
    finished = stdout_task.done() and not stdout_task.cancelled()
    stdout_bytes = stdout_task.result() if finished and stdout_task.exception() is None else 0
    stderr_text = tail.text()
    if stderr_text.strip():
        log.debug("agent pid %d stderr tail: %s", proc.pid, stderr_text[-500:])
    return ProcessOutcome(
        returncode=returncode,
        stderr_tail=stderr_text,
        stdout_bytes=stdout_bytes,
        duration_ms=int((time.monotonic() - started) * 1000),
    )


# -- the base of every CLI adapter ----------------------------------------------------------


class OutputParser(Protocol):
    """Reads an agent's stdout line by line and builds its result."""

    def feed(self, line: str) -> None:
        """Take one stdout line (progress is reported from here)."""

    def failure(self) -> AgentFailure | None:
        """The failure the agent itself reported, if any."""

    def result(self) -> AgentResult:
        """The result, or ``AgentFailure("bad_output")`` when the output is incomplete."""


def exit_code_failure(program: str, returncode: int, stderr_tail: str) -> AgentFailure:
    """The generic failure for a non-zero exit, naming a signal when there was one."""
    if returncode < 0:
        try:
            how = f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"was killed by signal {-returncode}"
    else:
        how = f"exited with code {returncode}"
    last = clip(stderr_tail.strip().splitlines()[-1]) if stderr_tail.strip() else ""
    message = f"{program} {how}" + (f": {last}" if last else " (nothing on stderr)")
    return AgentFailure(
        "exit_code", message, stderr_tail=stderr_tail, meta={"exit_code": returncode}
    )


class CliAdapter:
    """A CLI agent: its command line and its output parser; the running is shared.

    Subclasses set ``name``, ``program`` (default executable), ``version_args``
    and ``options`` (the option names they accept), and implement ``command``
    and ``parser``.
    """

    name: ClassVar[str]
    program: ClassVar[str]
    version_args: ClassVar[tuple[str, ...]]
    options: ClassVar[frozenset[str]] = frozenset()
    #: Those of ``options`` that take a list of strings (the others take one value).
    list_options: ClassVar[frozenset[str]] = frozenset()
    #: What the CLI says when asked to resume a session it does not have (lower case);
    #: empty when it cannot resume one. An adapter that sets it accepts ``resume``.
    session_gone_marks: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: Mapping[str, Any]) -> None:
        resumable = {"resume"} if self.session_gone_marks else set()
        check_options(self.name, options, self.options | CLI_COMMON_OPTIONS | resumable)
        if not isinstance(options.get("resume", False), bool):
            raise InvalidInput(f"option 'resume' of the {self.name} adapter must be true or false")
        #: Continue the agent's previous session on the next iteration.
        self.resume = options.get("resume") is True
        self.opts: dict[str, Any] = dict(options)
        self.path = opt_str(self.name, options, "path")
        self.extra_args = opt_str_list(self.name, options, "extra_args")
        self.grace_s = opt_number(self.name, options, "kill_grace_s", DEFAULT_GRACE_S)
        for key in self.options - self.list_options:  # a mistyped value stops start-up
            self.opt(key)
        self.env_table = opt_env(self.name, options)
        home = opt_str(self.name, options, "home")
        self.home = Path(os.path.expanduser(home)).absolute() if home else None

    def default_env(self, home: Path | None) -> dict[str, str]:
        """The CLI's quiet defaults (telemetry and update checks off, bounded retries)
        plus what points it at its own ``home``; the agent's ``env`` overrides them."""
        return {"HOME": str(home)} if home is not None else {}

    def prepare_home(self, home: Path, env: Mapping[str, str]) -> None:
        """Create the agent's own home; a CLI may write its default settings there."""
        home.mkdir(parents=True, exist_ok=True)

    def environment(self) -> dict[str, str]:
        """The environment this agent's program starts with (see :func:`agent_environment`)."""
        env = agent_environment(self.env_table, defaults=self.default_env(self.home))
        if self.home is not None:
            try:
                self.prepare_home(self.home, env)
            except OSError as exc:
                raise AgentFailure(
                    "agent_error",
                    f"cannot prepare the agent's home {self.home}: {exc.strerror or exc}",
                    retryable=False,
                ) from exc
        return env

    def opt(self, key: str) -> str | None:
        """A string option of this adapter, written as the CLI wants it."""
        value = self.opts.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise InvalidInput(f"option {key!r} of the {self.name} adapter must be a string")
        return str(value)

    def command(self, program: str, request: AgentRequest, scratch: Path) -> list[str]:
        """The argv (never containing the prompt). ``scratch`` is a private temp dir."""
        raise NotImplementedError

    def stdin_text(self, prompt: str) -> str:
        """What goes on stdin for ``prompt``: a CLI that reads ``/command`` or
        ``@file`` in its input gets them neutralised here."""
        return prompt

    def parser(self, request: AgentRequest, progress: ProgressSink) -> OutputParser:
        raise NotImplementedError

    def exit_failure(
        self, returncode: int, reported: AgentFailure | None, stderr_tail: str
    ) -> AgentFailure:
        """The failure for a non-zero exit: what the agent said, else the exit code."""
        return reported or exit_code_failure(self.program, returncode, stderr_tail)

    def prepare(self, request: AgentRequest) -> None:
        """Refuse a request this agent cannot take, before starting anything."""
        if request.workspace is not None and not request.workspace.is_dir():
            raise AgentFailure(
                "bad_workspace",
                f"workspace {request.workspace} does not exist or is not a directory",
                retryable=False,
            )

    async def run(self, request: AgentRequest, progress: ProgressSink) -> AgentResult:
        """Run the agent; see :func:`run_process` for what is guaranteed.

        With ``resume`` and a session to continue, the CLI resumes it; when that
        session is gone, the agent runs afresh and its result says so
        (``meta.resume_note``), rather than the iteration failing.
        """
        session = request.resume_session if self.resume else None
        if session is None:
            return await self._run_once(dataclasses.replace(request, resume_session=None), progress)
        try:
            result = await self._run_once(request, progress)
        except AgentFailure as failure:
            said = f"{failure.message}\n{failure.stderr_tail}".lower()
            if not any(mark in said for mark in self.session_gone_marks):
                raise
            log.info("%s: session %s is gone; running afresh", self.name, session)
            result = await self._run_once(
                dataclasses.replace(request, resume_session=None), progress
            )
            result.meta["resume_note"] = (
                f"the agent's session {session} could not be resumed (it is gone); "
                "this run started a fresh session with the full prompt"
            )
            return result
        result.meta["resumed_session"] = session
        return result

    async def _run_once(self, request: AgentRequest, progress: ProgressSink) -> AgentResult:
        self.prepare(request)
        program = locate_program(self.program, self.path)
        env = self.environment()
        parser = self.parser(request, progress)
        refused: list[str] = []

        def feed(line: str) -> None:
            try:
                parser.feed(line)
            except UntrustedJSON as exc:
                log.warning("%s: skipping an output line: %s", self.name, exc)
                refused.append(str(exc))

        with tempfile.TemporaryDirectory(prefix=f"orchestra-{self.name}-") as scratch:
            argv = self.command(program, request, Path(scratch))
            outcome = await run_process(
                argv,
                stdin_data=self.stdin_text(request.prompt).encode("utf-8"),
                on_line=feed,
                timeout_s=request.timeout_s,
                cwd=request.workspace,
                env=env,
                grace_s=self.grace_s,
            )
        reported = parser.failure()
        failure = (
            self.exit_failure(outcome.returncode, reported, outcome.stderr_tail)
            if outcome.returncode != 0
            else reported
        )
        if failure is not None:
            failure.stderr_tail = failure.stderr_tail or outcome.stderr_tail
            failure.meta.setdefault("exit_code", outcome.returncode)
            log.warning("%s failed: %s: %s", self.name, failure.reason, failure.message)
            raise failure
        try:
            result = parser.result()
        except AgentFailure as exc:
            exc.stderr_tail = exc.stderr_tail or outcome.stderr_tail
            if refused:  # the answer was probably on a line we would not parse
                exc.message += f" ({len(refused)} output line(s) skipped: {refused[0]})"
            log.warning("%s failed: %s: %s", self.name, exc.reason, exc.message)
            raise
        if result.duration_ms is None:
            result.duration_ms = outcome.duration_ms
        if request.output_schema is not None and result.structured is None:
            result.structured = structured_from_text(result.content)
        result.meta.setdefault("stdout_bytes", outcome.stdout_bytes)
        return result

    async def check(self) -> AgentCheck:
        """Run the program's version command, e.g. ``claude -v``."""
        lines: list[str] = []
        try:
            program = locate_program(self.program, self.path)
            outcome = await run_process(
                [program, *self.version_args],
                stdin_data=b"",
                on_line=lines.append,
                timeout_s=CHECK_TIMEOUT_S,
                env=self.environment(),
                grace_s=self.grace_s,
            )
        except AgentFailure as exc:
            return AgentCheck(ok=False, detail=exc.message)
        if outcome.returncode != 0:
            failure = exit_code_failure(self.program, outcome.returncode, outcome.stderr_tail)
            return AgentCheck(ok=False, detail=failure.message)
        version = next((line.strip() for line in lines if line.strip()), "version unknown")
        return AgentCheck(ok=True, detail=f"{clip(version)} ({program}){self.check_note()}")

    def check_note(self) -> str:
        """What a person should know about this CLI, shown by ``orchestra agents``."""
        return ""
