"""What a notification says: the payload queued in the outbox, the body each
format sends, and the signature over it.

The payload is built once, when the event is queued (what the workflow and the
checkpoint said then), and kept in the row, so a retry days later sends the same
thing. The Slack body is derived from it at delivery (an incoming webhook's
``text`` and ``blocks``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any

import orjson

from orchestra.domain.events import EventType, NotificationKind
from orchestra.domain.models import Event
from orchestra.domain.statuses import WorkflowStatus

#: A terminal workflow status → the notification it makes.
_BY_STATUS = {
    WorkflowStatus.FAILED.value: NotificationKind.WORKFLOW_FAILED,
    WorkflowStatus.COMPLETED.value: NotificationKind.WORKFLOW_COMPLETED,
    WorkflowStatus.CANCELLED.value: NotificationKind.WORKFLOW_CANCELLED,
}
SUMMARY_CHARS = 200
_SENTENCE = re.compile(r"(.+?[.!?])(\s|$)", re.DOTALL)


def kind_of(event: Event) -> NotificationKind | None:
    """The notification an event makes, if any."""
    if event.type is EventType.CHECKPOINT_CREATED:
        return NotificationKind.CHECKPOINT_PENDING
    if event.type is EventType.CHECKPOINT_DEADLINE_PASSED:
        return NotificationKind.CHECKPOINT_OVERDUE
    changed = event.data.get("from") != event.data.get("to")
    if event.type is EventType.WORKFLOW_STATUS_CHANGED and event.workflow_id and changed:
        return _BY_STATUS.get(str(event.data.get("to")))
    return None


def _one_line(text: str, limit: int = SUMMARY_CHARS) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _first_sentence(text: str) -> str:
    match = _SENTENCE.match(text.strip())
    return match.group(1) if match else text


def build_payload(
    event: Event,
    kind: NotificationKind,
    workflow: Mapping[str, Any],
    checkpoint: Mapping[str, Any] | None,
    link_base: str,
) -> dict[str, Any]:
    """The JSON a ``json`` target receives (and the source of the Slack text)."""
    wf_id = str(workflow["id"])
    cp_payload: dict[str, Any] | None = None
    recommended: str | None = None
    if checkpoint is not None:
        body = checkpoint["body"]
        title = str(body.get("title", ""))
        # Checkpoint.summary/recommended when the workflow gives them; else the title
        # and the first sentence of the instructions.
        summary = str(body.get("summary") or "") or (
            f"{title} — {_first_sentence(str(body.get('instructions', '')))}"
        )
        recommended = body.get("recommended")
        cp_payload = {
            "id": checkpoint["id"],
            "number": checkpoint["number"],
            "step": checkpoint["step_name"],
            "title": title,
            "actions": [a.get("name") for a in body.get("actions", [])],
        }
        status = WorkflowStatus.AWAITING_CHECKPOINT.value
        if kind is NotificationKind.CHECKPOINT_OVERDUE:
            taken = event.data.get("action")
            then = f"default action {taken} taken" if taken else "still waiting"
            summary = f"Overdue since {event.data.get('due_at')} ({then}): {summary}"
    else:
        status = str(event.data.get("to", workflow["status"]))
        summary = f"Workflow {workflow['name']!r} {status}"
        error = event.data.get("error") or (
            workflow["error"] if status == WorkflowStatus.FAILED.value else None
        )
        if error:
            summary += f": {error}"
    payload = {
        "event": kind.value,
        "event_id": event.id,
        "occurred_at": event.created_at.isoformat(),
        "workflow": {
            "id": wf_id,
            "name": workflow["name"],
            "type": workflow["type"],
            "status": status,
        },
        "checkpoint": cp_payload,
        "summary": _one_line(summary),
        "recommended": recommended,
        "link": f"{link_base}/workflows/{wf_id}#decide",
    }
    if kind is NotificationKind.CHECKPOINT_OVERDUE:
        payload["deadline"] = {
            "due_at": event.data.get("due_at"),
            "action": event.data.get("action"),
            "note": event.data.get("note"),
        }
    return payload


def slack_body(payload: Mapping[str, Any]) -> dict[str, Any]:
    """An incoming-webhook message: ``text`` (the fallback) and a section with the
    summary in mrkdwn and a button to the decision."""
    wf = payload["workflow"]
    cp = payload.get("checkpoint")
    if cp:
        ask = "Overdue decision" if payload.get("deadline") else "Decision needed"
        headline = f"{ask}: {wf['name']} ({cp['step']})"
    else:
        headline = f"Workflow {wf['name']}: {wf['status']}"

    line = _slack_escape(str(payload["summary"]))
    if payload.get("recommended"):
        line += f"\nRecommended: *{_slack_escape(str(payload['recommended']))}*"
    text = f"{_slack_escape(headline)}: {_slack_escape(str(payload['summary']))}"
    return {
        "text": text,
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"*{_slack_escape(headline)}*\n{line}"},
                "accessory": {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Open" if not cp else "Decide"},
                    "url": payload["link"],
                },
            }
        ],
    }


def _slack_escape(text: str) -> str:
    """Slack's three control characters (a name is never a mention or a link)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def encode_body(format_: str, payload: Mapping[str, Any]) -> bytes:
    return orjson.dumps(slack_body(payload) if format_ == "slack" else payload)


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`` (timestamped, so a
    receiver can refuse an old request replayed)."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()
