"""The terminal run at the code review checkpoint: an action that takes line comments
offers the review file in ``$EDITOR`` (or typed PATH:LINE:TEXT without one), a
misplaced comment is shown and can be fixed, and the decision carries the comments."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from rich.console import Console

from orchestra.cli.run import TerminalRun
from orchestra.domain.models import Checkpoint, Decision, LineComment
from tests.unit.test_cli_code_view import code_checkpoint, edited_app, real_change

EDITOR = """\
import pathlib, sys
path = pathlib.Path(sys.argv[1])
runs = pathlib.Path(sys.argv[0]).with_suffix(".runs")
count = int(runs.read_text()) if runs.exists() else 0
runs.write_text(str(count + 1))
lines = path.read_text().splitlines(keepends=True)
if count == 0 and "{first}" == "misplace":
    lines.insert(0, "> not under a diff line\\n")
else:
    lines = [line for line in lines if not line.startswith("> not under")]
    at = next(n for n, line in enumerate(lines) if "line five, changed" in line)
    lines[at + 1 : at + 1] = ["> Use a constant.\\n", "> Really.\\n"]
path.write_text("".join(lines))
"""


class Scripted(TerminalRun):
    """A terminal run whose person answers from a list."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.screen = io.StringIO()
        self.out = Console(file=self.screen, width=100)

    def _ask(self, prompt: str) -> str:
        self.out.print(prompt)
        return self.answers.pop(0)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Checkpoint:
    return code_checkpoint(real_change(tmp_path, {"app.py": edited_app()}))


def use_editor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: str = "") -> None:
    script = tmp_path / "editor.py"
    script.write_text(EDITOR.replace("{first}", first))
    wrapper = tmp_path / "editor"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", str(wrapper))


def decide(run: Scripted, cp: Checkpoint, action: str) -> Decision | None:
    chosen = cp.action(action)
    assert chosen is not None
    return run._complete(cp, chosen)


COMMENT = LineComment(file="app.py", line=5, body="Use a constant.\nReally.")


def test_comments_written_in_the_editor_go_with_the_decision(
    checkpoint: Checkpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_editor(tmp_path, monkeypatch)
    run = Scripted(["n", "y", "see the comments"])  # no edit of the feedback; comment; notes
    decision = decide(run, checkpoint, "request_changes")
    assert decision == Decision(
        action="request_changes", notes="see the comments", inputs={}, comments=[COMMENT]
    )
    assert "1 line comment(s)." in run.screen.getvalue()


def test_a_misplaced_comment_is_shown_and_edited_again(
    checkpoint: Checkpoint,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    use_editor(tmp_path, monkeypatch, first="misplace")
    run = Scripted(["n", "y", "y", ""])  # …, edit again, no notes
    decision = decide(run, checkpoint, "request_changes")
    assert decision is not None and decision.comments == [COMMENT]
    assert "a comment must be right under a diff line" in capsys.readouterr().err
    assert (tmp_path / "editor.runs").read_text() == "2"


def test_giving_up_on_misplaced_comments_sends_nothing(
    checkpoint: Checkpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_editor(tmp_path, monkeypatch, first="misplace")
    run = Scripted(["n", "y", "n"])
    assert decide(run, checkpoint, "request_changes") is None
    assert run.answers == []


def test_without_an_editor_comments_are_typed(
    checkpoint: Checkpoint, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.delenv("EDITOR", raising=False)
    monkeypatch.setattr("orchestra.cli.run.editor_command", lambda: None)
    answers = ["n", "y", "app.py", "app.py:1:not shown", "app.py:5:Use a constant.", "", ""]
    run = Scripted(answers)
    decision = decide(run, checkpoint, "request_changes")
    assert decision is not None
    assert decision.comments == [LineComment(file="app.py", line=5, body="Use a constant.")]
    err = capsys.readouterr().err
    assert "is not PATH:LINE:TEXT" in err and "line 1 of app.py is not in the diff" in err


def test_an_action_without_comments_does_not_ask(checkpoint: Checkpoint) -> None:
    run = Scripted(["n", ""])  # no edit, no notes
    decision = decide(run, checkpoint, "approve")
    assert decision == Decision(action="approve", inputs={})
    assert "Comment on lines" not in run.screen.getvalue()
