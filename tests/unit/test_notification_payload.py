"""What a notification says: which events make one, the payload (the checkpoint's
one-line summary and recommended action when it has them), the Slack body, the
signature, and the backoff."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any

from orchestra.domain.events import EventType, NotificationKind
from orchestra.domain.models import Event
from orchestra.notifications.delivery import Backoff
from orchestra.notifications.payload import build_payload, kind_of, signature, slack_body

AT = datetime(2026, 12, 4, tzinfo=UTC)
WORKFLOW = {"id": "w1", "name": "flag", "type": "plan_review", "status": "failed", "error": None}


def _event(type_: EventType, **data: Any) -> Event:
    return Event(id=7, workflow_id="w1", type=type_, data=data, created_at=AT)


def _checkpoint(**body: Any) -> dict[str, Any]:
    base = {"title": "Plan ready", "instructions": "Read the plan. Then decide.", "actions": []}
    return {"id": "c1", "number": 1, "step_name": "plan", "body": {**base, **body}}


def test_only_new_checkpoints_and_terminal_changes_make_notifications() -> None:
    wf = EventType.WORKFLOW_STATUS_CHANGED
    assert kind_of(_event(EventType.CHECKPOINT_CREATED)) is NotificationKind.CHECKPOINT_PENDING
    assert kind_of(_event(wf, **{"from": "running", "to": "failed"})) is (
        NotificationKind.WORKFLOW_FAILED
    )
    assert kind_of(_event(wf, **{"from": "awaiting_checkpoint", "to": "completed"})) is (
        NotificationKind.WORKFLOW_COMPLETED
    )
    assert kind_of(_event(wf, **{"from": "running", "to": "running"})) is None
    assert kind_of(_event(wf, **{"from": "pending", "to": "running"})) is None
    assert kind_of(_event(EventType.CHECKPOINT_STATUS_CHANGED)) is None


def test_the_checkpoints_own_summary_and_recommendation_are_used_when_it_has_them() -> None:
    cp = _checkpoint(summary="Plan v2 ready — 3 approve", recommended="approve")
    p = build_payload(
        _event(EventType.CHECKPOINT_CREATED), NotificationKind.CHECKPOINT_PENDING, WORKFLOW, cp, "u"
    )
    assert p["summary"] == "Plan v2 ready — 3 approve" and p["recommended"] == "approve"
    plain = build_payload(
        _event(EventType.CHECKPOINT_CREATED),
        NotificationKind.CHECKPOINT_PENDING,
        WORKFLOW,
        _checkpoint(title="Plan\nready " + "x" * 300),
        "u",
    )
    assert plain["recommended"] is None
    assert "\n" not in plain["summary"] and len(plain["summary"]) == 200
    fallback = build_payload(
        _event(EventType.CHECKPOINT_CREATED),
        NotificationKind.CHECKPOINT_PENDING,
        WORKFLOW,
        _checkpoint(),
        "u",
    )
    assert fallback["summary"] == "Plan ready — Read the plan."


def test_a_failure_says_its_error() -> None:
    event = _event(
        EventType.WORKFLOW_STATUS_CHANGED, **{"from": "running", "to": "failed", "error": "boom"}
    )
    p = build_payload(event, NotificationKind.WORKFLOW_FAILED, WORKFLOW, None, "https://o")
    assert p["checkpoint"] is None and p["workflow"]["status"] == "failed"
    assert p["summary"] == "Workflow 'flag' failed: boom"
    assert p["link"] == "https://o/workflows/w1#decide"


def test_slack_text_cannot_mention_or_link() -> None:
    event = _event(EventType.CHECKPOINT_CREATED)
    wf = {**WORKFLOW, "name": "<!here> <https://evil|click> & co"}
    body = slack_body(
        build_payload(event, NotificationKind.CHECKPOINT_PENDING, wf, _checkpoint(), "u")
    )
    text = body["text"] + body["blocks"][0]["text"]["text"]
    assert "<" not in text and ">" not in text
    assert "&lt;!here&gt;" in text and "&amp; co" in text


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(b"k", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert signature(b"k", "1700000000", b"{}") == "sha256=" + expected


def test_backoff_doubles_from_its_base_up_to_its_cap() -> None:
    backoff = Backoff(base_s=2, max_s=10)
    assert [backoff.after(n) for n in (1, 2, 3, 4, 5)] == [2, 4, 8, 10, 10]
