"""Deadlines in the CLI: ``orchestra run --deadline … --default-action …`` (a bad one
is exit 2 naming the option's field, nothing created), and ``show``/``inbox`` saying
when a decision is due or how long it is overdue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from orchestra.cli.main import app
from orchestra.cli.render import checkpoint_view, due_text, inbox_table
from orchestra.domain.deadlines import CheckpointDeadline
from orchestra.domain.models import Checkpoint, CheckpointAction
from orchestra.domain.statuses import CheckpointStatus

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _cli(tmp_path: Path, *args: str) -> Any:
    env = {"ORCHESTRA_CONFIG": str(tmp_path / "orchestra.toml"), "COLUMNS": "200"}
    return CliRunner().invoke(app, ["--data-dir", str(tmp_path), *args], env=env)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--deadline", "soon"], "deadline.after"),
        (["--deadline", "1h", "--default-action", "merge"], "offered by no checkpoint"),
        (["--default-action", "approve"], "deadline.after is needed"),
    ],
)
def test_a_bad_deadline_on_the_command_line_is_refused(
    tmp_path: Path, args: list[str], says: str
) -> None:
    result = _cli(tmp_path, "run", "plan it", *args)
    assert result.exit_code == 2, result.output
    assert says in " ".join(result.output.split()), result.output


def _checkpoint(due_in: timedelta, **deadline: Any) -> Checkpoint:
    due = NOW + due_in
    return Checkpoint(
        id="c" * 32,
        workflow_id="w" * 32,
        number=1,
        iteration=1,
        step_name="plan_ready_for_review",
        title="Plan ready",
        instructions="Read it.",
        actions=[CheckpointAction(name="approve", label="Approve")],
        status=CheckpointStatus.PENDING,
        created_at=NOW - timedelta(minutes=5),
        due_at=due,
        deadline=CheckpointDeadline(due_at=due, after_s=3600, **deadline),
    )


def test_due_and_overdue_are_said_compactly() -> None:
    assert due_text(_checkpoint(timedelta(hours=3, minutes=59)), NOW) == "due in 3h 59m"
    assert due_text(_checkpoint(-timedelta(minutes=12, seconds=4)), NOW) == "overdue 12m 04s"
    plain = _checkpoint(timedelta(hours=1)).model_copy(update={"due_at": None, "deadline": None})
    assert due_text(plain, NOW) == ""


def test_inbox_and_show_say_when_it_is_due_and_what_happens_then() -> None:
    cp = _checkpoint(timedelta(hours=1), escalate=["ops"], action="approve")
    out = Console(width=200, record=True)
    out.print(inbox_table([cp], {cp.workflow_id: "flag"}, NOW))
    assert "5m 00s · due in 1h 00m" in out.export_text()
    out = Console(width=200, record=True)
    out.print(checkpoint_view(cp))
    text = " ".join(out.export_text().split())
    assert "Deadline:" in text
    assert "then: escalate to ops; default action 'approve' by orchestra (deadline)" in text
