"""Deadline configuration: durations, ``[deadlines.<step>]`` tables checked at load
(targets against ``[[notify]]``, steps and actions against the workflows), and how a
checkpoint's deadline follows from the workflow's request and the step's table."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestra.config import load_settings
from orchestra.domain.deadlines import (
    DeadlineRequest,
    StepDeadline,
    checkpoint_deadline,
    deadline_policy,
    parse_duration,
)
from orchestra.domain.errors import InvalidInput
from orchestra.runtime import open_runtime
from orchestra.service import check_step_deadlines

TARGET = '[[notify]]\nname = "ops"\nurl = "https://hooks.example/x"\nsecret = "k"\n'


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ORCHESTRA_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        (90, 90.0),
        (1.5, 1.5),
        ("90s", 90.0),
        ("30m", 1800.0),
        ("4h", 14400.0),
        ("2d", 172800.0),
        ("1h30m", 5400.0),
        (" 2H ", 7200.0),
        ("0.5h", 1800.0),
    ],
)
def test_durations_are_seconds_or_text(given: object, seconds: float) -> None:
    assert parse_duration(given) == seconds


@pytest.mark.parametrize(
    "given",
    [
        "",
        "4",
        "h",
        "4 hours",
        "-1h",
        "1h-",
        "0s",
        0,
        -3,
        True,
        float("nan"),
        float("inf"),
        "367d",
        None,
        [1],
    ],
)
def test_anything_else_is_not_a_duration(given: object) -> None:
    with pytest.raises(ValueError, match=r"duration|between|out of range|a number and a unit"):
        parse_duration(given)


def test_a_deadlines_table_is_read_from_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "orchestra.toml").write_text(
        TARGET + '[deadlines.plan_ready_for_review]\nafter = "4h"\nescalate = ["ops"]\n'
        'action = "approve"\n'
    )
    settings = load_settings(data_dir=tmp_path)
    assert settings.deadlines == {
        "plan_ready_for_review": StepDeadline(after=14400, escalate=["ops"], action="approve")
    }


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ('after = "soon"', "is not a duration"),
        ('after = "1h"\nescalate = ["nobody"]', "unknown [[notify]] target(s) 'nobody'"),
        ('after = "1h"\nwhen = "now"', "Extra inputs"),
        ('escalate = ["ops"]', "after"),
        ('after = "1h"\naction = "Approve it"', "not an action name"),
    ],
)
def test_a_bad_deadlines_table_stops_the_start_saying_what_is_wrong(
    tmp_path: Path, table: str, says: str
) -> None:
    (tmp_path / "orchestra.toml").write_text(
        TARGET + f"[deadlines.plan_ready_for_review]\n{table}\n"
    )
    with pytest.raises(InvalidInput) as err:
        load_settings(data_dir=tmp_path)
    assert says in err.value.message and "deadlines" in err.value.message, err.value.message


@pytest.mark.parametrize(
    ("step", "action", "says"),
    [
        ("plan_ready", None, "no workflow has a checkpoint step named 'plan_ready'"),
        ("plan", None, "no workflow has a checkpoint step"),  # an agent step
        ("plan_ready_for_review", "revise", "action 'revise' is not offered"),
    ],
)
def test_steps_and_actions_are_checked_against_the_workflows(
    step: str, action: str | None, says: str
) -> None:
    with pytest.raises(InvalidInput, match=says):
        check_step_deadlines({step: StepDeadline(after=60, action=action)})


def test_an_unknown_step_in_the_file_stops_the_runtime_and_closes_its_database(
    tmp_path: Path,
) -> None:
    (tmp_path / "orchestra.toml").write_text('[deadlines.nowhere]\nafter = "1h"\n')
    with pytest.raises(InvalidInput, match="nowhere"):
        open_runtime(load_settings(data_dir=tmp_path))


def test_the_workflow_s_due_time_wins_and_its_opt_in_chooses_the_action() -> None:
    steps = {"s": StepDeadline(after=600, escalate=["ops"], action="approve")}
    mine = deadline_policy(DeadlineRequest(after=60, default_action="retry"), steps)
    assert checkpoint_deadline(mine, "s", ["retry", "approve"]) == {
        "after_s": 60.0,
        "action": "retry",
        "escalate": ["ops"],
        "reason": None,
    }
    # Not offered here: the step's own action, when the workflow opted in.
    assert checkpoint_deadline(mine, "s", ["approve"])["action"] == "approve"  # type: ignore[index]
    neither = checkpoint_deadline(mine, "s", ["cancel"])
    assert neither is not None and neither["action"] is None and "'retry'" in neither["reason"]
    # No opt-in: the step's action is never taken.
    none = checkpoint_deadline(deadline_policy(None, steps), "s", ["approve"])
    assert none is not None and none["action"] is None and none["after_s"] == 600
    # Another step, and no due time of the workflow's own: no deadline.
    assert checkpoint_deadline(deadline_policy(None, steps), "t", ["approve"]) is None
    assert deadline_policy(None, {}) is None
