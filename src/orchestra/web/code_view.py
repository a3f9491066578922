"""The code under review as a checkpoint page shows it: files, numbered lines, and the
reviewers' findings under the lines they name.

A 2 MB diff is some 9 MB of table rows, which Jinja takes most of a second to
write — too long for the event loop, and a live page is rendered again on every
event. So each file's table is rendered in :mod:`orchestra.web.render_pool`'s
worker processes (:func:`render_file`: :func:`~orchestra.domain.code.parse_patch`
numbers the lines, ``templates/code_file.html`` writes them, Jinja escapes every
path, line and finding), under the pool's deadline and cached there; the page
handler collects the files a template asks for (:data:`FILE_HTML` holds a ``set``
while collecting), as it does for markdown, and renders again with the results.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from jinja2 import Environment
from markupsafe import Markup

from orchestra.domain.code import CodeChange, DiffFile, Finding, LineKind, PatchLine, parse_patch
from orchestra.domain.models import Checkpoint
from orchestra.web.diff import LineKind as DiffKind
from orchestra.web.markdown import render_markdown
from orchestra.web.templating import environment

#: A file's table as the pool rendered it: its HTML and the lines findings sit under.
FileHtml = tuple[str, list[int]]

#: A file's spec (:func:`file_spec`) → its table (or why there is none), filled by the
#: page handler; a ``set`` while collecting what the template asks for.
FILE_HTML: ContextVar[Mapping[str, FileHtml | str] | set[str] | None] = ContextVar(
    "file_html", default=None
)

#: How each kind of line is marked, and what a screen reader says instead: as in the
#: line diffs of edited text (the kinds share their values, hence their CSS classes).
MARKS = {
    kind: (DiffKind(kind.value).mark, DiffKind(kind.value).spoken)
    for kind in LineKind
    if kind is not LineKind.HUNK
}


@dataclass(frozen=True)
class FileView:
    file: DiffFile
    #: A stable id for the page (``code-<checkpoint>-<n>``).
    anchor: str
    #: The file's table (empty for a binary file, or while collecting).
    html: Markup
    #: Why the lines are not shown (too large, too slow), when they are not.
    note: str = ""


@dataclass(frozen=True)
class CodeView:
    change: CodeChange
    files: list[FileView]
    #: Findings that sit under no line shown here: listed first, above the files.
    general: list[Finding]


def takes_comments(cp: Checkpoint) -> bool:
    """Whether any of the checkpoint's actions takes line comments (the UI shows then)."""
    return any(a.takes_comments for a in cp.actions)


def file_spec(diff_file: DiffFile, findings: list[Finding], commenting: bool) -> str:
    """What :func:`render_file` needs for one file, as one string (the pool's cache key)."""
    mine = [f.model_dump() for f in findings if f.file == diff_file.path and f.line is not None]
    spec = {"path": diff_file.path, "patch": diff_file.patch, "findings": mine, "on": commenting}
    return orjson.dumps(spec).decode()


def code_view(cp: Checkpoint, commenting: bool) -> CodeView | None:
    """The template's view of ``cp``'s code change, or None when it shows none.

    While the handler collects, each file's spec is recorded and the view is empty.
    """
    change = CodeChange.of(cp)
    if change is None:
        return None
    known = FILE_HTML.get()
    files: list[FileView] = []
    placed: set[tuple[str, int]] = set()
    for n, diff_file in enumerate(change.files, start=1):
        anchor = f"code-{cp.id}-{n}"
        if not diff_file.patch:
            files.append(FileView(diff_file, anchor, Markup("")))
            continue
        spec = file_spec(diff_file, change.findings, commenting)
        if isinstance(known, set):
            known.add(spec)
            files.append(FileView(diff_file, anchor, Markup("")))
            continue
        got = known.get(spec) if known is not None else None
        if not isinstance(got, tuple):
            files.append(FileView(diff_file, anchor, Markup(""), note=got or "not prepared"))
            continue
        html, lines = got
        placed.update((diff_file.path, line) for line in lines)
        files.append(FileView(diff_file, anchor, Markup(html)))  # our template's, escaped
    general = [f for f in change.findings if (f.file or "", f.line or 0) not in placed]
    return CodeView(change, files, general)


# -- in a render worker ------------------------------------------------------------------


@cache
def _worker_env() -> Environment:
    """The environment the workers render file tables in: markdown is rendered right
    there (the worker is where slow work belongs, under the pool's deadline)."""
    env = environment()
    env.filters["markdown"] = render_markdown
    env.filters["humanize"] = lambda value: (value or "").replace("_", " ")
    env.globals["line_marks"] = MARKS
    return env


def _under(lines: list[PatchLine], findings: list[Finding]) -> dict[int, list[Finding]]:
    """Row index → the findings shown right under it: each finding once, under the new
    file's line it names, else under the removed line of that number."""
    by_line: dict[int, list[Finding]] = defaultdict(list)
    for finding in findings:
        if finding.line is not None:
            by_line[finding.line].append(finding)
    under: dict[int, list[Finding]] = {}
    for side in ("new_no", "old_no"):
        for n, line in enumerate(lines):
            number = getattr(line, side)
            if number in by_line and line.kind is not LineKind.HUNK:
                under[n] = by_line.pop(number)
    return under


def render_file(spec: str) -> FileHtml:
    """One file's diff table as HTML, and the line numbers findings were placed under
    (run in a render worker; ``spec`` from :func:`file_spec`)."""
    data: dict[str, Any] = orjson.loads(spec)
    lines = parse_patch(data["patch"])
    under = _under(lines, [Finding.model_validate(f) for f in data["findings"]])
    table = _worker_env().get_template("code_file.html").module.file_table  # type: ignore[attr-defined]
    html = table(data["path"], lines, under, data["on"])
    return str(html), sorted({f.line for found in under.values() for f in found if f.line})
