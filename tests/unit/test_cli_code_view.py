"""The CLI shows the code under review: the checks, each file's numbered diff in
colour, findings under the lines they name (unanchored ones first), within 80
columns and a bounded number of lines."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

from rich.cells import cell_len
from rich.console import Console, RenderableType

from orchestra.cli.render import (
    CODE_LINES_PER_FILE,
    checkpoint_view,
    code_change_view,
    result_view,
)
from orchestra.domain.code import (
    CheckOutcome,
    CodeChange,
    Finding,
    as_context,
    bounded_files,
)
from orchestra.domain.models import (
    AgentOutput,
    Checkpoint,
    CheckpointAction,
    LineComment,
    Resolution,
    Workflow,
)
from orchestra.domain.statuses import ActionStyle, CheckpointStatus, WorkflowStatus
from orchestra.workflows.git_worktree import create_worktree, diff, git, snapshot

WF = "c3" * 16
BASE_APP = "".join(f"line {n}\n" for n in range(1, 21))


def real_change(
    tmp_path: Path,
    changes: dict[str, str | None],
    *,
    base: dict[str, str] | None = None,
    findings: list[Finding] | None = None,
    check: CheckOutcome | None = None,
) -> CodeChange:
    """A :class:`CodeChange` made from a real ``git diff``: a repository with ``base``
    committed, a worktree where ``changes`` are written (``None`` deletes), snapshot 1."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for name, content in (base if base is not None else {"app.py": BASE_APP}).items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    wt = create_worktree(repo, "review", WF)
    for name, text in changes.items():
        path = wt.path / name
        if text is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    commit = snapshot(wt, 1)
    files, omitted = bounded_files(diff(wt, commit))
    return CodeChange(
        branch=wt.branch,
        base=wt.base,
        snapshot=commit,
        worktree=str(wt.path),
        files=files,
        files_omitted=omitted,
        findings=findings or [],
        check=check,
    )


def code_checkpoint(change: CodeChange, **fields: object) -> Checkpoint:
    """A ``code_ready_for_review`` checkpoint as the workflow writes it."""
    now = datetime.now(UTC)
    values: dict[str, object] = {
        "id": "cp-code",
        "workflow_id": "wf-code",
        "number": 3,
        "iteration": 1,
        "step_name": "code_ready_for_review",
        "title": "Code ready for review",
        "instructions": "Review the change.",
        "context": {"code": as_context(change), "iteration": 1, "max_iterations": 3},
        "editable_content": "Fix the loop.",
        "editable_label": "Feedback for the implementer",
        "actions": [
            CheckpointAction(name="approve", label="Approve", style=ActionStyle.PRIMARY),
            CheckpointAction(name="request_changes", label="Request changes", takes_comments=True),
        ],
        "status": CheckpointStatus.PENDING,
        "created_at": now,
    }
    values.update(fields)
    return Checkpoint.model_validate(values)


def screen(renderable: RenderableType, width: int = 80) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None, legacy_windows=False).print(renderable)
    return out.getvalue()


def edited_app() -> str:
    lines = BASE_APP.splitlines(keepends=True)
    lines[4] = "line five, changed\n"  # line 5
    del lines[9]  # old line 10
    lines.insert(15, "a new line after 15\n")
    return "".join(lines)


def test_the_diff_is_numbered_with_findings_under_their_lines(tmp_path: Path) -> None:
    change = real_change(
        tmp_path,
        {"app.py": edited_app(), "docs/new.md": "# New\n"},
        findings=[
            Finding(agent="rev-a", severity="high", title="Off by one", file="app.py", line=5),
            Finding(agent="rev-b", title="Why remove it?", file="app.py", line=10),
            Finding(agent="rev-a", severity="low", title="Overall fine"),
        ],
    )
    text = screen(code_change_view(change))
    lines = text.splitlines()
    # The general finding comes before any file.
    assert text.index("Overall fine") < text.index("app.py  +2 −2")
    assert "docs/new.md  +1 −0" in text
    changed = next(n for n, ln in enumerate(lines) if "line five, changed" in ln)
    assert lines[changed].split("│")[1].split()[:3] == ["5", "+", "line"]
    assert "[high] Off by one" in lines[changed + 1] and "rev-a" in lines[changed + 1]
    # Line 10 is the new file's (old line 11), not the removed old line 10.
    new_ten = next(n for n, ln in enumerate(lines) if "line 11" in ln)
    assert lines[new_ten].split("│")[1].split()[:2] == ["11", "10"]
    assert "Why remove it?" in lines[new_ten + 1]
    assert "2 file(s) changed, +3 −2" in text
    assert text.count("Off by one") == 1  # shown once, under its line


def test_the_check_result_is_shown_before_the_files(tmp_path: Path) -> None:
    check = CheckOutcome(
        command=["pytest", "-q"],
        exit_code=1,
        passed=False,
        output_tail="collected 3 items\nFAILED test_app.py::test_loop\n1 failed, 2 passed\n",
        duration_ms=2300,
    )
    text = screen(code_change_view(real_change(tmp_path, {"app.py": "x\n"}, check=check)))
    assert "✗ checks failed" in text and "pytest -q" in text and "exit code 1" in text
    assert "1 failed, 2 passed" in text
    assert text.index("1 failed, 2 passed") < text.index("app.py  +1")
    passed = CheckOutcome(command=["make", "test"], exit_code=0, passed=True, output_tail="ok\n")
    assert "✓ checks passed" in screen(code_change_view(change_with(passed)))


def change_with(check: CheckOutcome) -> CodeChange:
    return CodeChange(branch="b", base="0" * 40, snapshot="1" * 40, worktree="/w", check=check)


def test_long_lines_and_names_fit_80_columns(tmp_path: Path) -> None:
    long_name = "src/" + "very_long_directory_name/" * 6 + "module.py"
    body = "value = '" + "x" * 500 + "'\n"
    change = real_change(
        tmp_path,
        {long_name: body},
        findings=[Finding(agent="r", title="t " * 200, detail="d " * 300, file=long_name, line=1)],
    )
    text = screen(checkpoint_view(code_checkpoint(change)))
    assert all(cell_len(line) <= 80 for line in text.splitlines())
    assert text.replace("\n", "").count("x") >= 500  # folded, not lost


def test_a_huge_diff_is_cut_with_a_note(tmp_path: Path) -> None:
    many = "".join(f"row {n}\n" for n in range(3 * CODE_LINES_PER_FILE))
    change = real_change(
        tmp_path,
        {"big.txt": many},
        findings=[Finding(agent="r", title="Late finding", file="big.txt", line=1000)],
    )
    text = screen(code_change_view(change))
    rest = 3 * CODE_LINES_PER_FILE + 1 - CODE_LINES_PER_FILE  # lines + the hunk header
    assert f"… {rest} more lines, see the web page" in text
    assert f"row {CODE_LINES_PER_FILE + 10}" not in text
    assert "big.txt:1000 Late finding" in text  # a finding on a cut line still shows


def test_binary_deleted_and_empty_changes(tmp_path: Path) -> None:
    change = real_change(
        tmp_path,
        {"app.py": None, "logo.bin": "\x00\x01\x02"},
        findings=[Finding(agent="r", title="Still used", file="app.py", line=3)],
    )
    text = screen(code_change_view(change))
    assert "app.py  +0 −20" in text
    lines = text.splitlines()
    gone = next(n for n, ln in enumerate(lines) if "- line 3" in ln)
    assert "Still used" in lines[gone + 1]  # a deleted file's line: the old number
    assert "logo.bin  +0 −0  binary" in text and "binary file: no diff shown" in text
    empty = CodeChange(branch="b", base="0" * 40, snapshot="0" * 40, worktree="/w")
    assert "No changes." in screen(code_change_view(empty))


def test_the_checkpoint_shows_the_code_and_other_checkpoints_do_not(tmp_path: Path) -> None:
    change = real_change(tmp_path, {"app.py": edited_app()})
    text = screen(checkpoint_view(code_checkpoint(change)), width=100)
    assert "Code under review" in text and "line five, changed" in text
    assert text.index("Code under review") < text.index("Feedback for the implementer")
    plain = code_checkpoint(change, context={"iteration": 1})
    assert "Code under review" not in screen(checkpoint_view(plain))


def test_a_resolved_checkpoint_lists_its_line_comments(tmp_path: Path) -> None:
    cp = code_checkpoint(real_change(tmp_path, {"app.py": edited_app()}))
    resolution = Resolution(
        action="request_changes",
        comments=[
            LineComment(file="app.py", line=5, body="Use a constant."),
            LineComment(file="app.py", line=16, body="[bold]why[/bold]?"),
        ],
        resolved_by="ana",
        resolved_at=datetime.now(UTC),
    )
    done = cp.model_copy(update={"resolution": resolution, "status": CheckpointStatus.REJECTED})
    text = screen(checkpoint_view(done), width=100)
    assert "request_changes by ana" in text
    assert "app.py:5 Use a constant." in text and "app.py:16 [bold]why[/bold]?" in text


def test_an_implementation_s_result_says_where_the_commit_is() -> None:
    now = datetime.now(UTC)
    wf = Workflow(
        id="wf",
        name="impl",
        type="plan_implement",
        status=WorkflowStatus.COMPLETED,
        current_step=None,
        iteration=1,
        max_iterations=3,
        agents={},
        prompt="p",
        created_at=now,
        updated_at=now,
        result={
            "commit": "0123456789abcdef" * 2,
            "branch": "orchestra/impl-1234",
            "merged": False,
            "merge_note": "main has moved on: the branch is left for you to merge",
        },
    )
    text = screen(result_view(wf), width=120)
    assert "Committed 0123456789ab on branch orchestra/impl-1234. Not merged." in text
    assert "main has moved on" in text
    merged = wf.model_copy(update={"result": {"commit": "ab" * 20, "merged": True}})
    assert "Merged into the base branch." in screen(result_view(merged), width=120)
    gone = wf.model_copy(update={"result": {"discarded": True}})
    assert "The change was discarded" in screen(result_view(gone))


def test_a_code_review_names_the_place_of_each_issue(tmp_path: Path) -> None:
    review = {
        "verdict": "request_changes",
        "summary": "One problem.",
        "issues": [
            {"severity": "high", "title": "Off by one", "file": "app.py", "line": 5},
            {"severity": "low", "title": "Docs", "file": "README.md"},
        ],
    }
    output = AgentOutput(agent="rev", job="code_reviewer", content="", structured=review)
    cp = code_checkpoint(real_change(tmp_path, {"app.py": "x\n"}), agent_outputs=[output])
    text = screen(checkpoint_view(cp), width=100)
    assert "[high] app.py:5 Off by one" in text
    assert "[low] README.md Docs" in text
