"""The code under review as a checkpoint page shows it: files, numbered lines, and the
reviewers' findings under the lines they name.

Lines come from :func:`orchestra.domain.code.parse_patch` (one numbering for every
renderer), run off the event loop in :mod:`orchestra.web.render_pool`: the page
handler collects the patches a template asks for (:data:`PATCH_LINES` holds a
``set`` while collecting), parses them in the pool, and renders again with the
results, as it does for markdown. Nothing here builds HTML; Jinja escapes every
path, line and finding.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field

from orchestra.domain.code import CodeChange, DiffFile, Finding, LineKind, PatchLine
from orchestra.domain.models import Checkpoint
from orchestra.web.diff import LineKind as DiffKind

#: Patch text → its numbered lines (or why there are none), filled by the page handler;
#: a ``set`` while collecting what the template asks for.
PATCH_LINES: ContextVar[Mapping[str, list[PatchLine] | str] | set[str] | None] = ContextVar(
    "patch_lines", default=None
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
    lines: list[PatchLine]
    #: Why the lines are not shown (too large, too slow), when they are not.
    note: str = ""


@dataclass(frozen=True)
class CodeView:
    change: CodeChange
    files: list[FileView]
    #: Findings that name no line shown here: listed first, above the files.
    general: list[Finding]
    by_line: dict[tuple[str, int], list[Finding]] = field(default_factory=dict)

    def at(self, path: str, line: PatchLine) -> list[Finding]:
        """The findings to show right under ``line`` of ``path``."""
        if line.kind is LineKind.HUNK or line.anchor is None:
            return []
        return self.by_line.get((path, line.anchor), [])


def takes_comments(cp: Checkpoint) -> bool:
    """Whether any of the checkpoint's actions takes line comments (the UI shows then)."""
    return any(a.takes_comments for a in cp.actions)


def code_view(cp: Checkpoint) -> CodeView | None:
    """The template's view of ``cp``'s code change, or None when it shows none.

    While the handler collects, the patches are recorded and the view has no lines.
    """
    change = CodeChange.of(cp)
    if change is None:
        return None
    known = PATCH_LINES.get()
    files: list[FileView] = []
    shown: set[tuple[str, int]] = set()
    for n, diff_file in enumerate(change.files, start=1):
        anchor = f"code-{cp.id}-{n}"
        patch = diff_file.patch
        if isinstance(known, set):
            known.add(patch)
            files.append(FileView(diff_file, anchor, []))
            continue
        got = known.get(patch) if known is not None else None
        if not patch:
            lines: list[PatchLine] | str = []
        else:
            lines = got if got is not None else "not prepared"
        if isinstance(lines, str):
            files.append(FileView(diff_file, anchor, [], note=lines))
            continue
        shown.update((diff_file.path, ln.anchor) for ln in lines if ln.anchor is not None)
        files.append(FileView(diff_file, anchor, lines))
    by_line: dict[tuple[str, int], list[Finding]] = defaultdict(list)
    general: list[Finding] = []
    for finding in change.findings:
        key = (finding.file or "", finding.line or 0)
        if finding.file is not None and finding.line is not None and key in shown:
            by_line[key].append(finding)
        else:
            general.append(finding)
    return CodeView(change, files, general, dict(by_line))
