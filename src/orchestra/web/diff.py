"""Line diffs between two texts, for edited checkpoint content and plan versions.

The templates render the lines; marking is by kind (added, removed, same,
skipped), so no HTML is built here and every line is escaped by Jinja.
Diffing is quadratic on crafted input, so pages call it through
:mod:`orchestra.web.render_pool`, never on the event loop.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from enum import StrEnum


class LineKind(StrEnum):
    """A diff line's kind; the value names its CSS class (``diff-add`` …)."""

    ADDED = "add"
    REMOVED = "del"
    SAME = "ctx"
    SKIPPED = "gap"

    @property
    def mark(self) -> str:
        return _MARKS[self][0]

    @property
    def spoken(self) -> str:
        """What a screen reader says instead of the mark."""
        return _MARKS[self][1]


_MARKS = {
    LineKind.ADDED: ("+", "added"),
    LineKind.REMOVED: ("−", "removed"),
    LineKind.SAME: (" ", "unchanged"),
    LineKind.SKIPPED: ("⋯", "lines left out"),
}


@dataclass(frozen=True)
class DiffLine:
    kind: LineKind
    text: str
    old_no: int | None = None
    new_no: int | None = None


@dataclass(frozen=True)
class Diff:
    lines: list[DiffLine]
    added: int
    removed: int
    #: Why the lines are not shown (too large or too slow to compare), when they are not.
    note: str = ""

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.note)


def line_diff(old: str, new: str, *, context: int = 3) -> Diff:
    """The changed lines of ``old → new`` with ``context`` unchanged lines around them."""
    a, b = old.splitlines(), new.splitlines()
    lines: list[DiffLine] = []
    added = removed = 0
    groups = list(difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_grouped_opcodes(context))
    for n, group in enumerate(groups):
        if n or group[0][1] > 0:
            lines.append(DiffLine(LineKind.SKIPPED, "…"))
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                lines += [
                    DiffLine(LineKind.SAME, a[i], i + 1, j1 + k + 1)
                    for k, i in enumerate(range(i1, i2))
                ]
                continue
            if tag in ("replace", "delete"):
                lines += [DiffLine(LineKind.REMOVED, a[i], old_no=i + 1) for i in range(i1, i2)]
                removed += i2 - i1
            if tag in ("replace", "insert"):
                lines += [DiffLine(LineKind.ADDED, b[j], new_no=j + 1) for j in range(j1, j2)]
                added += j2 - j1
    if lines and groups and groups[-1][-1][2] < len(a):
        lines.append(DiffLine(LineKind.SKIPPED, "…"))
    return Diff(lines, added, removed)
