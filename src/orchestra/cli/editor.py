"""Editing text the way a person at a terminal expects: ``$VISUAL``/``$EDITOR``.

Without a usable editor: ``vi`` when there is a terminal, else the text is read
from standard input (ended by a line with a single ``.`` or end of input), so
scripts can pipe their edits in.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from orchestra.cli.errors import CliError

log = logging.getLogger(__name__)

END_OF_TEXT = "."


def interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def editor_command() -> list[str] | None:
    """The editor to run (argv without the file), or ``None`` to read stdin instead."""
    for variable in ("VISUAL", "EDITOR"):
        raw = os.environ.get(variable, "").strip()
        if not raw:
            continue
        argv = shlex.split(raw)
        if argv and shutil.which(argv[0]):
            return argv
        log.warning("$%s=%r is not a program on PATH; ignoring it", variable, raw)
    if interactive() and shutil.which("vi"):
        return ["vi"]
    return None


def _read_stdin(text: str, label: str, console: Console) -> str:
    console.print(
        f"No editor available: type the new {label.lower()} below and end it with a line "
        f"containing only '{END_OF_TEXT}' (an empty answer keeps the current text)."
    )
    lines: list[str] = []
    while True:
        try:
            line = input()
        except EOFError:
            break
        if line == END_OF_TEXT:
            break
        lines.append(line)
    return "\n".join(lines) + "\n" if lines else text


def edit_text(text: str, *, label: str, console: Console) -> str:
    """Let the person edit ``text``; return the edited text.

    Raises :class:`CliError` when the editor exits with an error (nothing is
    kept of that attempt).
    """
    command = editor_command()
    if command is None:
        return _read_stdin(text, label, console)
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") or "content"
    with tempfile.TemporaryDirectory(prefix="orchestra-") as tmp:
        path = Path(tmp) / f"{slug}.md"
        path.write_text(text, encoding="utf-8")
        # Keep piped input (a script's answers) away from the editor.
        stdin = None if sys.stdin.isatty() else subprocess.DEVNULL
        try:
            completed = subprocess.run([*command, str(path)], stdin=stdin, check=False)
        except OSError as exc:
            raise CliError(f"cannot start the editor {command[0]!r}: {exc}") from exc
        if completed.returncode != 0:
            raise CliError(
                f"the editor {shlex.join(command)} exited with status {completed.returncode}; "
                "the edit was discarded"
            )
        return path.read_text(encoding="utf-8")
