"""Line comments written at a terminal: ``--comment PATH:LINE:TEXT`` and the review
file opened in ``$EDITOR``, parsed back into the comments the web page would make."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestra.cli.comments import CommentError, parse_option, parse_review, review_file
from orchestra.domain.code import CodeChange
from orchestra.domain.models import LineComment
from tests.unit.test_cli_code_view import edited_app, real_change


def under(text: str, diff_line_part: str, *comment: str) -> str:
    """``text`` with ``comment`` lines written right under the first line holding
    ``diff_line_part`` (as a person does in the editor)."""
    lines = text.splitlines(keepends=True)
    at = next(n for n, line in enumerate(lines) if diff_line_part in line)
    return "".join(lines[: at + 1] + [f"{c}\n" for c in comment] + lines[at + 1 :])


@pytest.fixture
def change(tmp_path: Path) -> CodeChange:
    return real_change(tmp_path, {"app.py": edited_app(), "a:12:b.py": "one\ntwo\n"})


# -- --comment PATH:LINE:TEXT ------------------------------------------------------


def test_the_option_splits_path_line_and_text() -> None:
    assert parse_option("src/app.py:12:use a constant") == LineComment(
        file="src/app.py", line=12, body="use a constant"
    )
    # The text may hold colons and numbers; without the change the first split wins.
    assert parse_option("x.py:5:see foo:3: bar") == LineComment(
        file="x.py", line=5, body="see foo:3: bar"
    )
    assert parse_option("C:/dir:name.py:7:ok").file == "C:/dir:name.py"
    assert parse_option("x:1:2:text") == LineComment(file="x", line=1, body="2:text")


def test_with_the_change_the_split_naming_a_diff_line_wins(change: CodeChange) -> None:
    """A path holding ``:<digits>:`` is found when the change shows that file."""
    assert parse_option("a:12:b.py:2:second line", change) == LineComment(
        file="a:12:b.py", line=2, body="second line"
    )
    assert parse_option("app.py:5:five", change).file == "app.py"
    # Overlapping splits: "a:12:b.py:1:…" could be a path "a" line 12 (not shown).
    assert parse_option("a:12:b.py:1:1:x", change) == LineComment(
        file="a:12:b.py", line=1, body="1:x"
    )


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("app.py", "is not PATH:LINE:TEXT"),
        ("app.py:12", "is not PATH:LINE:TEXT"),
        (":12:text", "is not PATH:LINE:TEXT"),
        ("app.py:x:text", "is not PATH:LINE:TEXT"),
        ("app.py:0:text", "greater than or equal to 1"),
        ("app.py:5:   ", "the comment text is empty"),
    ],
)
def test_bad_options_say_what_to_write(raw: str, says: str) -> None:
    with pytest.raises(CommentError, match=says) as caught:
        parse_option(raw)
    assert caught.value.details["field"] == "comments"


def test_an_option_must_name_a_line_the_diff_shows(change: CodeChange) -> None:
    with pytest.raises(CommentError, match=r"line 1 of app\.py is not in the diff"):
        parse_option("app.py:1:before the hunk", change)
    with pytest.raises(CommentError, match=r"other\.py is not a file of the change"):
        parse_option("other.py:3:text", change)


# -- the review file ---------------------------------------------------------------


def test_comments_under_diff_lines_come_back_with_their_lines(change: CodeChange) -> None:
    review = review_file(change)
    assert "app.py:5" in review.text and "+ line five, changed" in review.text
    text = under(review.text, "line five, changed", "> Use a constant.", "> And test it.")
    text = under(text, "- line 10", "> Why remove this?")
    text = under(text, "a:12:b.py:2", ">", "> colons in the path are fine")
    assert parse_review(review, text) == [  # in the order of the file: git's
        LineComment(file="a:12:b.py", line=2, body="colons in the path are fine"),
        LineComment(file="app.py", line=5, body="Use a constant.\nAnd test it."),
        LineComment(file="app.py", line=10, body="Why remove this?"),
    ]


def test_an_untouched_review_file_has_no_comments(change: CodeChange) -> None:
    review = review_file(change)
    assert parse_review(review, review.text) == []
    assert parse_review(review, "") == []


def test_a_comment_not_under_a_diff_line_is_an_error(change: CodeChange) -> None:
    review = review_file(change)
    first_file_header = review.text.index("## ")
    misplaced = review.text[:first_file_header] + "> floating\n" + review.text[first_file_header:]
    under_hunk = under(review.text, "@@ -", "> on the hunk header")
    typed_bare = under(review.text, "line five, changed", "forgot the marker")
    for text, says in (
        (misplaced, "a comment must be right under a diff line"),
        (under_hunk, "a comment must be right under a diff line"),
        (typed_bare, "neither a diff line nor a comment"),
    ):
        with pytest.raises(CommentError, match=says) as caught:
            parse_review(review, text)
        assert "line " in caught.value.message


def test_hostile_paths_and_text_stay_one_line_and_literal(tmp_path: Path) -> None:
    """A path that looks like a comment or an instruction, or holds a newline or an
    escape, is still a diff line of its own and comments under it name it exactly."""
    names = ["> quoted.py", "# hashed.py", "new\nline.py", "esc\x1b[31m.py"]
    change = real_change(tmp_path, {name: "text\x1b[2J\n" for name in names}, base={"r": "x\n"})
    review = review_file(change)
    assert "\x1b" not in review.text
    text = review.text
    for name in names:
        shown = name.replace("\n", "\\x0a").replace("\x1b", "\\x1b")
        text = under(text, f"{shown}:1", f"> about {shown}")
    found = parse_review(review, text)
    assert sorted((c.file, c.line) for c in found) == sorted((n, 1) for n in names)


def test_more_comments_than_a_decision_takes_are_refused(change: CodeChange) -> None:
    review = review_file(change)
    line = next(written for written in review.lines if "line five, changed" in written)
    many = review.text + f"{line}\n> a\n" * 501
    with pytest.raises(CommentError, match="501 line comments: at most 500"):
        parse_review(review, many)
