"""What the fake agent CLIs (``claude``, ``codex``, ``gemini`` beside this file) share.

The fakes print the exact headless formats of the real programs (see the
reference on agent CLI formats) and misbehave on request. Environment:

- ``FAKE_AGENT_SCENARIO``: what to do (default ``success``); the generic ones
  are handled here: ``hang``; ``hang_ignore_term`` (with a grandchild, both
  deaf to SIGTERM); ``grandchild`` (spawn a child holding our pipes, then
  hang); ``exit_noise`` (stderr noise, exit 3); ``exit_N`` (exit with code N
  after a line on stderr).
- ``FAKE_AGENT_PROMPT_FILE``: the exact stdin bytes are written there.
- ``FAKE_AGENT_PID_FILE``: ``"<our pid> <grandchild pid>"`` is written there.
- ``FAKE_AGENT_ARGS_FILE``: ``{"argv", "cwd", "env_names"}`` is written there.
- ``FAKE_IMPLEMENT_FILE``: in the ``implement`` scenario, the file (relative to the
  working directory) the fake edits, instead of ``IMPLEMENTED.md``.

Only the standard library, so any ``python3`` runs it.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

#: A recognisable pattern for big outputs; tests rebuild it with ``big_text``.
PIECE = "0123456789abcdef"
NOISE_LINES = 400
LAST_NOISE_LINE = "fatal: the fake agent broke down on purpose"


def big_text(size):
    """``size`` characters of a repeating pattern ending in ``END``."""
    return (PIECE * (size // len(PIECE) + 1))[: size - 3] + "END"


def scenario():
    return os.environ.get("FAKE_AGENT_SCENARIO", "success")


def emit(obj):
    """One JSONL line on stdout, flushed at once like the real programs."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def fail(message, code):
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    sys.exit(code)


def flag_value(args, flag):
    """The value after ``flag`` (or in ``flag=value``), else ``None``."""
    for index, arg in enumerate(args):
        if arg == flag and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(flag + "="):
            return arg[len(flag) + 1 :]
    return None


def record(args):
    """Read stdin fully and write the side files the tests asked for."""
    prompt = sys.stdin.buffer.read()
    args_file = os.environ.get("FAKE_AGENT_ARGS_FILE")
    if args_file:
        with open(args_file, "w", encoding="utf-8") as handle:
            json.dump({"argv": args, "cwd": os.getcwd(), "env_names": sorted(os.environ)}, handle)
    prompt_file = os.environ.get("FAKE_AGENT_PROMPT_FILE")
    if prompt_file:
        with open(prompt_file, "wb") as handle:
            handle.write(prompt)
    return prompt


def spawn_grandchild():
    """A child in our process group that inherits our stdout and stderr, like a
    shell command an agent left running."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    pid_file = os.environ.get("FAKE_AGENT_PID_FILE")
    if pid_file:
        temp = pid_file + ".tmp"
        with open(temp, "w", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()} {child.pid}")
        os.replace(temp, pid_file)
    return child


def hang():
    while True:
        time.sleep(60)


def generic(name):
    """Act out the scenarios every fake shares; return only when ``name`` is not one."""
    if name == "hang":
        hang()
    elif name == "hang_ignore_term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the grandchild inherits this
        spawn_grandchild()
        hang()
    elif name == "grandchild":
        spawn_grandchild()
        hang()
    elif name == "exit_noise":
        for number in range(NOISE_LINES):
            sys.stderr.write(f"noise line {number}: something chatty on stderr\n")
        fail(LAST_NOISE_LINE, 3)
    elif name.startswith("exit_"):
        fail(f"fake agent: exiting with {name[5:]} on purpose", int(name[5:]))
    elif name == "grandchild_exit":
        spawn_grandchild()  # then the normal output; the caller goes on


#: The file the ``implement`` scenario edits unless ``FAKE_IMPLEMENT_FILE`` names another.
IMPLEMENT_FILE = "IMPLEMENTED.md"
IMPLEMENT_HEADER = "# Implemented\n\n"


def implement(prompt, workdir):
    """Really edit a file in ``workdir`` as an implementer would, so each run (each
    iteration) leaves a different tree: the first run creates it, a later one appends.

    Each run adds ``- <sha256 of the prompt> <its first line>``. Returns
    ``(absolute path, relative path, the whole new content, created)``."""
    relative = os.environ.get("FAKE_IMPLEMENT_FILE") or IMPLEMENT_FILE
    root = os.path.realpath(workdir)
    path = os.path.realpath(os.path.join(root, relative))
    if os.path.isabs(relative) or not path.startswith(root + os.sep):
        fail(f"fake agent: {relative!r} is outside the working directory", 2)
    text = prompt.decode("utf-8", "replace")
    first = text.splitlines()[0] if text.strip() else ""
    entry = f"- {hashlib.sha256(prompt).hexdigest()} {first}\n"
    created = not os.path.exists(path)
    before = IMPLEMENT_HEADER
    if not created:
        with open(path, encoding="utf-8") as handle:
            before = handle.read()
    content = before + entry
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(content)
    return path, relative, content, created


def implemented_text(relative, created):
    """The implementer's final answer in the ``implement`` scenario."""
    return f"{'Created' if created else 'Updated'} {relative} as the plan asks."


def now_iso():
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
