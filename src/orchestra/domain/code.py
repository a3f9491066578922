"""Code changes as a person decides on them: a diff per file, reviewers' findings
anchored to lines, the checks' result, and line comments.

This is the data of the ``code_ready_for_review`` checkpoint (its
``context["code"]``), one definition for the engine that writes it and the API,
web page and CLI that show it. :func:`parse_patch` turns a file's unified diff
into numbered lines, so every renderer numbers lines (and anchors comments and
findings) the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import Field, ValidationError

from orchestra.domain.models import Checkpoint, Model

#: The most files a checkpoint carries; the rest are counted, not shown.
MAX_FILES = 300
#: The most characters of one file's patch kept; a longer one is cut (and marked).
MAX_PATCH_CHARS = 200_000
#: The most characters of all patches together.
MAX_TOTAL_PATCH_CHARS = 2_000_000


class DiffFile(Model):
    """One changed file: counts against the base, and its unified diff (bounded)."""

    path: str
    added: int = 0
    removed: int = 0
    binary: bool = False
    patch: str = ""
    #: Whether ``patch`` was cut at :data:`MAX_PATCH_CHARS`.
    truncated: bool = False


class Finding(Model):
    """A code reviewer's issue, anchored to the file and line it names (either may be
    missing: a finding about the whole change, or a whole file)."""

    agent: str
    severity: str = "medium"
    title: str
    detail: str = ""
    file: str | None = None
    line: int | None = None


class CheckOutcome(Model):
    """How the workspace's check command ended in the worktree."""

    command: list[str]
    exit_code: int | None
    passed: bool
    output_tail: str = ""
    duration_ms: int = 0
    #: Why it did not finish (timeout, not found), when it did not.
    problem: str | None = None


class CodeChange(Model):
    """What ``code_ready_for_review`` shows: where the change is and what it is."""

    branch: str
    #: The commit the worktree was cut from, and the snapshot under review.
    base: str
    snapshot: str
    worktree: str
    files: list[DiffFile] = Field(default_factory=list)
    #: Changed files left out beyond :data:`MAX_FILES`.
    files_omitted: int = 0
    findings: list[Finding] = Field(default_factory=list)
    check: CheckOutcome | None = None

    @classmethod
    def of(cls, checkpoint: Checkpoint) -> CodeChange | None:
        """The code change a checkpoint shows, if it shows one."""
        raw = checkpoint.context.get("code")
        if not isinstance(raw, dict):
            return None
        try:
            return cls.model_validate(raw)
        except ValidationError:
            return None

    def findings_at(self, path: str, line: int) -> list[Finding]:
        return [f for f in self.findings if f.file == path and f.line == line]

    def unanchored(self) -> list[Finding]:
        """Findings that name no line shown in the diff (general, or elsewhere)."""
        shown = {
            (f.path, ln.new_no if ln.new_no is not None else ln.old_no)
            for f in self.files
            for ln in parse_patch(f.patch)
            if ln.kind is not LineKind.HUNK
        }
        return [f for f in self.findings if (f.file, f.line) not in shown]


class WorktreeInfo(Model):
    """One of Orchestra's worktrees in a repository, and the workflow it belongs to
    (``None``: none that is known here — left behind, safe to prune)."""

    path: str
    branch: str | None
    workflow_id: str | None = None
    workflow_status: str | None = None


def bounded_files(files: list[DiffFile]) -> tuple[list[DiffFile], int]:
    """``files`` within the checkpoint's bounds: at most :data:`MAX_FILES`, each patch
    and all of them together cut to size (marked ``truncated``); and how many were
    left out."""
    kept: list[DiffFile] = []
    total = 0
    for given in files[:MAX_FILES]:
        room = max(0, min(MAX_PATCH_CHARS, MAX_TOTAL_PATCH_CHARS - total))
        one = given
        if len(given.patch) > room:
            cut = given.patch[:room]
            cut = cut[: cut.rfind("\n") + 1] if "\n" in cut else ""
            one = given.model_copy(update={"patch": cut, "truncated": True})
        total += len(one.patch)
        kept.append(one)
    return kept, max(0, len(files) - MAX_FILES)


class LineKind(StrEnum):
    """A diff line's kind; the value names its CSS class (``diff-add`` …)."""

    ADDED = "add"
    REMOVED = "del"
    SAME = "ctx"
    HUNK = "hunk"


@dataclass(frozen=True)
class PatchLine:
    """One line of a unified diff with its numbers in the old and the new file."""

    kind: LineKind
    text: str
    old_no: int | None = None
    new_no: int | None = None

    @property
    def anchor(self) -> int | None:
        """The line a comment on it names: the new file's, else the old file's."""
        return self.new_no if self.new_no is not None else self.old_no


_HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@")


def parse_patch(patch: str) -> list[PatchLine]:
    """The lines of a unified diff after its header, numbered (linear time; a
    malformed patch gives fewer numbered lines, never an error)."""
    lines: list[PatchLine] = []
    old = new = 0
    in_hunk = False
    for raw in patch.split("\n"):
        match = _HUNK.match(raw)
        if match:
            old, new = int(match.group(1)), int(match.group(2))
            in_hunk = True
            lines.append(PatchLine(LineKind.HUNK, raw))
            continue
        if not in_hunk or raw.startswith("\\"):  # header, or "\ No newline at end of file"
            continue
        mark, text = raw[:1], raw[1:]
        if mark == "+":
            lines.append(PatchLine(LineKind.ADDED, text, None, new))
            new += 1
        elif mark == "-":
            lines.append(PatchLine(LineKind.REMOVED, text, old, None))
            old += 1
        elif mark == " ":
            lines.append(PatchLine(LineKind.SAME, text, old, new))
            old += 1
            new += 1
        else:  # the end of the patch (or of a hunk)
            in_hunk = False
    return lines


def as_context(change: CodeChange) -> dict[str, Any]:
    """The JSON a checkpoint's context keeps under ``"code"``."""
    return change.model_dump(mode="json")
