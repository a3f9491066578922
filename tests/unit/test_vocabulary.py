"""One vocabulary: no status string is spelled out outside ``domain/statuses.py``.

The scanner looks for a quoted literal whose text is exactly a status value
(``"completed"``, ``'awaiting_checkpoint'``), in Python string tokens (so a
status quoted inside SQL text is caught too, comments are not) and anywhere in
the web templates, scripts and styles. Status words used as plain words
(``pending_checkpoint``, ``"failed to start"``) are not literals and pass.
"""

from __future__ import annotations

import io
import re
import shutil
import tokenize
from pathlib import Path

import pytest

import orchestra
from orchestra.domain.statuses import (
    AgentRunStatus,
    CheckpointStatus,
    NotificationStatus,
    WorkflowStatus,
)

SRC = Path(orchestra.__file__).parent
HOME = Path("domain") / "statuses.py"
WEB_SUFFIXES = {".html", ".jinja", ".j2", ".js", ".mjs", ".css"}
STATUS_VALUES = sorted(
    {
        s.value
        for enum in (WorkflowStatus, CheckpointStatus, AgentRunStatus, NotificationStatus)
        for s in enum
    }
)
_STATUS = "(" + "|".join(map(re.escape, STATUS_VALUES)) + ")"
_QUOTED_PY = re.compile(r"([\"'])" + _STATUS + r"\1")
#: Web files also quote with backticks (JS template literals).
_QUOTED_WEB = re.compile(r"([\"'`])" + _STATUS + r"\1")

#: (file relative to src/orchestra, literal) → why it is not a status.
#: Keep this short; prefer an enum. Each entry must say why it cannot be one.
ALLOWED: dict[tuple[str, str], str] = {
    ("agents/gemini.py", "cancelled"): (
        "the cause word of Gemini's exit code 130 (an AgentFailure reason, like 'auth' or "
        "'sandbox'), not an agent-run status; owned by the adapters' author"
    ),
}


def _python_string_spans(source: str) -> list[tuple[int, str]]:
    """(line, text) of every string literal, f-strings included, comments excluded."""
    spans: list[tuple[int, str]] = []
    lines = source.splitlines(keepends=True)
    fstring_start = getattr(tokenize, "FSTRING_START", None)  # Python ≥ 3.12
    fstring_end = getattr(tokenize, "FSTRING_END", None)
    opened: list[tuple[int, int]] = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.STRING:
            spans.append((tok.start[0], tok.string))
        elif tok.type == fstring_start:
            opened.append(tok.start)
        elif tok.type == fstring_end and opened:
            (row0, col0), (row1, col1) = opened.pop(), tok.end
            text = "".join(lines[row0 - 1 : row1])
            cut = len(text) - len(lines[row1 - 1]) + col1
            spans.append((row0, text[col0:cut]))
    return spans


def find_status_literals(source: str, suffix: str) -> list[tuple[int, str]]:
    """(line, status) for each quoted literal equal to a status value in ``source``."""
    found: list[tuple[int, str]] = []
    if suffix == ".py":
        for line, text in _python_string_spans(source):
            for match in _QUOTED_PY.finditer(text):
                found.append((line + text.count("\n", 0, match.start()), match.group(2)))
        return found
    for match in _QUOTED_WEB.finditer(source):
        found.append((source.count("\n", 0, match.start()) + 1, match.group(2)))
    return found


#: Migrations are frozen: each spells out the values of its day, by design
#: (tests/integration/test_migrations.py checks them against the definition).
MIGRATIONS = Path("store/migrations/versions")


def scanned_files(root: Path) -> list[Path]:
    files = [
        p
        for p in root.rglob("*.py")
        if "__pycache__" not in p.parts and not p.relative_to(root).is_relative_to(MIGRATIONS)
    ]
    web = root / "web"
    if web.is_dir():
        files += [p for p in web.rglob("*") if p.suffix in WEB_SUFFIXES]
    return sorted(f for f in files if f.relative_to(root) != HOME)


def violations(root: Path) -> list[str]:
    """``file:line: "status"`` for every literal not in :data:`ALLOWED`."""
    out = []
    for path in scanned_files(root):
        rel = path.relative_to(root).as_posix()
        source = path.read_text(encoding="utf-8")
        for line, value in find_status_literals(source, path.suffix):
            if (rel, value) not in ALLOWED:
                out.append(f"src/orchestra/{rel}:{line}: {value!r}")
    return out


def test_no_status_literal_outside_the_domain() -> None:
    found = violations(SRC)
    assert not found, (
        "status strings spelled out outside domain/statuses.py (use the enums):\n"
        + "\n".join(found)
    )


def test_the_scan_covers_the_package() -> None:
    scanned = {p.relative_to(SRC).as_posix() for p in scanned_files(SRC)}
    assert {"service.py", "engine/transition.py", "workflows/plan_review.py"} <= scanned
    assert HOME.as_posix() not in scanned
    # frozen migrations are left out on purpose (see MIGRATIONS)
    assert not any(f.startswith("store/migrations/versions/") for f in scanned)
    assert "store/migrate.py" in scanned


def test_every_allowed_literal_is_still_there() -> None:
    """A stale allow-list entry would silently permit a new literal: drop it."""
    for rel, value in ALLOWED:
        source = (SRC / rel).read_text(encoding="utf-8")
        assert value in {v for _, v in find_status_literals(source, ".py")}, (rel, value)


@pytest.mark.parametrize(
    ("source", "suffix", "expected"),
    [
        ('x = "completed"\n', ".py", [(1, "completed")]),
        ("y = 1\nif s == 'awaiting_checkpoint':\n    pass\n", ".py", [(2, "awaiting_checkpoint")]),
        ("q = text(\"status = 'pending'\")\n", ".py", [(1, "pending")]),
        ("m = f\"{a} is 'superseded'\"\n", ".py", [(1, "superseded")]),
        ('d = {"interrupted": 1, "skipped": 2}\n', ".py", [(1, "interrupted"), (1, "skipped")]),
        ('s = """\nwas "rejected"\n"""\n', ".py", [(2, "rejected")]),
        ('x = b"cancelled"\n', ".py", [(1, "cancelled")]),
        # plain words, identifiers, comments and other strings are not literals
        ('pending_checkpoint = "pending_checkpoint"\n', ".py", []),
        ('msg = "failed to start"  # a "running" comment\n', ".py", []),
        ("status = WorkflowStatus.COMPLETED\n", ".py", []),
        ('x = "Completed"\n', ".py", []),
        ('"""Runs are marked ``interrupted``."""\n', ".py", []),
        ('<span class="badge">{{ "approved" }}</span>\n', ".html", [(1, "approved")]),
        ("<p>edited by you</p>\n", ".html", []),
        ("if (s === 'running') {}\n", ".js", [(1, "running")]),
        ("const t = `failed`;\n", ".js", [(1, "failed")]),
        ('[data-status="edited"] { color: red }\n', ".css", [(1, "edited")]),
    ],
)
def test_scanner_finds_exact_quoted_status_literals(
    source: str, suffix: str, expected: list[tuple[int, str]]
) -> None:
    assert find_status_literals(source, suffix) == expected


def test_a_new_literal_in_a_copy_of_the_package_fails(tmp_path: Path) -> None:
    copy = tmp_path / "orchestra"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    already = violations(copy)  # whatever the real tree has is reported by the test above
    (copy / "engine" / "sneaky.py").write_text('"""Doc."""\n\nDONE = "completed"\n')
    (copy / "web" / "templates").mkdir(parents=True, exist_ok=True)
    (copy / "web" / "templates" / "x.html").write_text("<p>\n{% if s == 'pending' %}\n")
    assert sorted(set(violations(copy)) - set(already)) == [
        "src/orchestra/engine/sneaky.py:3: 'completed'",
        "src/orchestra/web/templates/x.html:2: 'pending'",
    ]
