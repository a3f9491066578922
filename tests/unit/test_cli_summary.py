"""The CLI shows what a checkpoint needs in one line (the inbox, the checkpoint) and
marks the action the workflow recommends."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from rich.console import Console, RenderableType

from orchestra.cli.render import actions_view, checkpoint_view, inbox_table
from orchestra.domain.models import Checkpoint, CheckpointAction
from orchestra.domain.statuses import CheckpointStatus

SUMMARY = "Plan v2 reviewed — 3 reviewers: 3× approve; recommended: approve"


def _printed(renderable: RenderableType, width: int = 80) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(renderable)
    return out.getvalue()


def _cp(**extra: object) -> Checkpoint:
    return Checkpoint(
        id="a" * 32,
        workflow_id="b" * 32,
        number=2,
        iteration=2,
        step_name="reviews_ready_for_consolidation",
        title="Reviews ready for consolidation",
        instructions="Read the reviews.",
        actions=[
            CheckpointAction(name="approve", label="Approve plan (finish)"),
            CheckpointAction(name="revise", label="Send feedback → planner"),
        ],
        status=CheckpointStatus.PENDING,
        created_at=datetime(2026, 12, 4, tzinfo=UTC),
        **extra,  # type: ignore[arg-type]
    )


def test_the_inbox_and_the_checkpoint_say_what_is_needed() -> None:
    cp = _cp(summary=SUMMARY, recommended="approve")
    inbox = _printed(inbox_table([cp], {cp.workflow_id: "flag"}), width=200)
    assert SUMMARY in inbox
    assert f"Needed: {SUMMARY}" in _printed(checkpoint_view(cp), width=200)


def test_only_the_recommended_action_is_marked() -> None:
    printed = _printed(actions_view(_cp(summary=SUMMARY, recommended="approve"))).splitlines()
    [approve] = [line for line in printed if "[approve]" in line]
    [revise] = [line for line in printed if "[revise]" in line]
    assert "★ recommended" in approve and "recommended" not in revise


def test_an_old_checkpoint_without_a_summary_shows_its_title() -> None:
    cp = _cp()
    assert "Reviews ready for consolidation" in _printed(inbox_table([cp], {}), width=200)
    assert "Needed:" not in _printed(checkpoint_view(cp), width=200)
    assert "★" not in _printed(actions_view(cp))
