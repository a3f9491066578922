"""Line comments on the code under review, as a person at a terminal writes them.

Two ways, one result (:class:`LineComment` with the line numbering of
:func:`~orchestra.domain.code.parse_patch`, as the web page anchors them):

- ``--comment 'path:LINE:text'`` on the command line (the path may hold colons:
  it is everything before a ``:<digits>:``; with the change at hand, the split
  that names a line of its diff wins);
- a review file opened in ``$EDITOR``: every diff line prefixed with its
  ``path:LINE``, comments written right under a line, each line of a comment
  starting with ``> ``.

Mistakes are :class:`CommentError` naming what to fix; nothing is sent with one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import ValidationError

from orchestra.cli.render import written_out
from orchestra.domain.code import CodeChange, LineKind, PatchLine, parse_patch
from orchestra.domain.errors import InvalidInput
from orchestra.domain.models import MAX_LINE_COMMENTS, LineComment

#: What starts each line of a comment in the review file.
QUOTE = "> "
#: Location columns are padded to the longest, at most this wide (longer ones push
#: their diff line right).
LOCATION_WIDTH = 32

#: Every ``:<digits>:`` (overlapping ones too: ``a:1:2:text``), as a lookahead.
_SPLIT = re.compile(r"(?=:(\d+):)")

MARK = {LineKind.ADDED: "+", LineKind.REMOVED: "-", LineKind.SAME: " "}


class CommentError(InvalidInput):
    """A line comment the person must fix (exit code 2, field ``comments``)."""


def _shown(text: str) -> str:
    """One line as the editor shows it: nothing in it acts on the terminal."""
    return written_out(text, newlines=True)


def anchors(change: CodeChange) -> dict[str, set[int]]:
    """The lines of each file a comment may name: those its diff shows."""
    return {
        f.path: {
            ln.anchor for ln in parse_patch(f.patch) if ln.anchor is not None and _commentable(ln)
        }
        for f in change.files
    }


def _commentable(line: PatchLine) -> bool:
    return line.kind is not LineKind.HUNK and line.anchor is not None


def _comment(file: str, line: int, body: str, where: str) -> LineComment:
    try:
        return LineComment(file=file, line=line, body=body)
    except ValidationError as exc:
        problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise CommentError(f"{where}: {problem}", details={"field": "comments"}) from None


def parse_option(raw: str, change: CodeChange | None = None) -> LineComment:
    """``path:LINE:text`` as a comment. The path is everything before a ``:<digits>:``
    (it may hold colons); when several splits are possible and ``change`` is given,
    the one naming a line of its diff wins, else the first. With ``change``, a path
    or line the diff does not show is refused."""
    splits = [
        (raw[: m.start()], int(m.group(1)), raw[m.start() + len(m.group(1)) + 2 :])
        for m in _SPLIT.finditer(raw)
        if m.start() > 0
    ]
    if not splits:
        raise CommentError(
            f"{raw!r} is not PATH:LINE:TEXT (e.g. src/app.py:12:use a constant)",
            details={"field": "comments"},
        )
    chosen = splits[0]
    if change is not None:
        shown = anchors(change)
        named = [s for s in splits if s[1] in shown.get(s[0], set())]
        if not named:
            path, line, _ = next((s for s in splits if s[0] in shown), chosen)
            if path in shown:
                raise CommentError(
                    f"{raw!r}: line {line} of {path} is not in the diff under review",
                    details={"field": "comments"},
                )
            raise CommentError(
                f"{raw!r}: {path} is not a file of the change under review",
                details={"field": "comments", "files": sorted(shown)[:50]},
            )
        chosen = named[0]
    path, line, body = chosen
    if not body.strip():
        raise CommentError(f"{raw!r}: the comment text is empty", details={"field": "comments"})
    return _comment(path, line, body, repr(raw))


def check_count(count: int) -> None:
    """Refuse more comments than a decision takes."""
    if count > MAX_LINE_COMMENTS:
        raise CommentError(
            f"{count} line comments: at most {MAX_LINE_COMMENTS} are taken",
            details={"field": "comments"},
        )


# -- the review file ----------------------------------------------------------------


@dataclass(frozen=True)
class ReviewFile:
    """The text a person comments in, and which diff line each of its lines is."""

    text: str
    #: Each diff line as written (without its line ending) → (file, line).
    lines: dict[str, tuple[str, int]]


INSTRUCTIONS = """\
# Line comments on the code under review.
#
# Every diff line below starts with its location (path:LINE). To comment on a
# line, write your comment on the line(s) right under it, each starting with "> ":
#
#   src/app.py:12    + total = price * 1.2
#   > Use the VAT constant here.
#   > (and round it)
#
# Leave the diff lines as they are. Lines starting with "#" are ignored (a comment
# must come right under a diff line, not under one of these). Save and quit when
# done; a file with no comments sends none.
"""


def review_file(change: CodeChange) -> ReviewFile:
    """The review file of ``change``: instructions, then each file's diff lines, each
    prefixed with ``path:LINE`` (a removed line: its old number)."""
    parsed = [(diff, parse_patch(diff.patch)) for diff in change.files]
    width = min(
        LOCATION_WIDTH,
        max(
            [len(f"{_shown(d.path)}:{ln.anchor}") for d, lines in parsed for ln in lines[-1:]]
            or [0]
        ),
    )
    out = [INSTRUCTIONS]
    known: dict[str, tuple[str, int]] = {}
    for diff, lines in parsed:
        out.append(f"\n## {_shown(diff.path)}  +{diff.added} -{diff.removed}\n")
        if diff.binary:
            out.append("# (binary file: no lines to comment on)\n")
        for line in lines:
            if line.anchor is None or not _commentable(line):
                out.append(f"# {_shown(line.text)}\n")
                continue
            location = f"{_shown(diff.path)}:{line.anchor}"
            written = f"{location:<{width}} {MARK[line.kind]} {_shown(line.text)}".rstrip()
            known[written] = (diff.path, line.anchor)
            out.append(written + "\n")
        if diff.truncated:
            out.append("# (the diff was cut short here)\n")
    if change.files_omitted:
        out.append(f"\n# … {change.files_omitted} more files are not shown.\n")
    return ReviewFile("".join(out), known)


def parse_review(review: ReviewFile, edited: str) -> list[LineComment]:
    """The comments written in ``edited`` (the review file after the person's edit).

    Raises :class:`CommentError` listing every problem, by line number of the file."""
    comments: list[tuple[str, int, list[str], int]] = []  # file, line, body lines, at
    current: tuple[str, int] | None = None
    problems: list[str] = []
    open_comment: list[str] | None = None
    for number, raw in enumerate(edited.splitlines(), start=1):
        line = raw.rstrip()
        if line in review.lines:
            current, open_comment = review.lines[line], None
        elif line.startswith("#"):
            current, open_comment = None, None
        elif line.startswith(">"):
            text = line[len(QUOTE) :] if line.startswith(QUOTE) else line[1:]
            if current is None:
                problems.append(
                    f"line {number}: a comment must be right under a diff line ({line[:60]!r})"
                )
            elif open_comment is None:
                open_comment = [text]
                comments.append((current[0], current[1], open_comment, number))
            else:
                open_comment.append(text)
        elif not line.strip():
            continue
        else:
            problems.append(
                f"line {number}: neither a diff line nor a comment; start comments with "
                f"{QUOTE!r} and leave diff lines unchanged ({line[:60]!r})"
            )
    found: list[LineComment] = []
    for file, line_no, body, at in comments:
        text = "\n".join(body).strip("\n")
        if not text.strip():
            continue
        try:
            found.append(_comment(file, line_no, text, f"line {at}"))
        except CommentError as exc:
            problems.append(exc.message)
    try:
        check_count(len(found))
    except CommentError as exc:
        problems.append(exc.message)
    if problems:
        raise CommentError(
            "the line comments need fixing:\n  "
            + "\n  ".join(problems[:20])
            + (f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else ""),
            details={"field": "comments", "problems": problems[:100]},
        )
    return found
