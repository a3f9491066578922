"""What the workflow page shows, derived from the :class:`History` alone.

Nothing here knows a workflow's steps: the timeline merges checkpoints and
agent runs by time; iteration documents are the checkpoints' editable content
grouped by their ``editable_label`` (a plan, a prompt, feedback …), as resolved;
progress lines come from ``agent_progress`` events. Status colours are
*tones* keyed by the status enums, so no status is spelled out in CSS or JS.
Nothing here diffs or renders: the texts to diff are handed to the page
handler (:func:`edit_texts`, :meth:`WorkflowView.diff_texts`), which diffs them
off the event loop and passes the results in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from orchestra.domain.events import EventType
from orchestra.domain.models import AgentRun, Checkpoint, Event, History, Workflow
from orchestra.domain.statuses import AgentRunStatus, CheckpointStatus, WorkflowStatus
from orchestra.web.diff import Diff


class Tone(StrEnum):
    """How a status looks (CSS classes ``tone-*``)."""

    IDLE = "idle"
    ACTIVE = "active"
    ATTENTION = "attention"
    GOOD = "good"
    BAD = "bad"
    MUTED = "muted"


#: Per enum: status members of different enums compare equal as strings.
TONES: dict[type[StrEnum], dict[str, Tone]] = {
    WorkflowStatus: {
        WorkflowStatus.PENDING: Tone.IDLE,
        WorkflowStatus.RUNNING: Tone.ACTIVE,
        WorkflowStatus.AWAITING_CHECKPOINT: Tone.ATTENTION,
        WorkflowStatus.COMPLETED: Tone.GOOD,
        WorkflowStatus.FAILED: Tone.BAD,
        WorkflowStatus.CANCELLED: Tone.MUTED,
    },
    CheckpointStatus: {
        CheckpointStatus.PENDING: Tone.ATTENTION,
        CheckpointStatus.APPROVED: Tone.GOOD,
        CheckpointStatus.EDITED: Tone.GOOD,
        CheckpointStatus.REJECTED: Tone.BAD,
        CheckpointStatus.SUPERSEDED: Tone.MUTED,
    },
    AgentRunStatus: {
        AgentRunStatus.RUNNING: Tone.ACTIVE,
        AgentRunStatus.COMPLETED: Tone.GOOD,
        AgentRunStatus.FAILED: Tone.BAD,
        AgentRunStatus.INTERRUPTED: Tone.IDLE,
        AgentRunStatus.CANCELLED: Tone.MUTED,
        AgentRunStatus.SKIPPED: Tone.MUTED,
    },
}


def tone(status: StrEnum) -> str:
    return TONES[type(status)][status].value


def humanize(value: str | None) -> str:
    """``awaiting_checkpoint`` → ``awaiting checkpoint``."""
    return (value or "").replace("_", " ")


#: Progress lines kept per agent run on the page (the newest).
MAX_PROGRESS_LINES = 200


@dataclass(frozen=True)
class ProgressLine:
    kind: str
    text: str


@dataclass
class RunView:
    run: AgentRun
    progress: list[ProgressLine] = field(default_factory=list)
    dropped: int = 0

    @property
    def running(self) -> bool:
        return self.run.status is AgentRunStatus.RUNNING


@dataclass(frozen=True)
class RunGroup:
    """The agent runs of one step visit (an iteration's planner, its reviewers …)."""

    iteration: int
    step_name: str
    runs: list[RunView]


@dataclass(frozen=True)
class TimelineItem:
    at: datetime
    checkpoint: Checkpoint | None = None
    run: AgentRun | None = None
    edit: Diff | None = None
    #: The label of the action chosen at a resolved checkpoint.
    action_label: str = ""
    #: A workflow-level moment (created, finished) when neither is set.
    note: str = ""


@dataclass(frozen=True)
class Document:
    """One kind of editable content (``editable_label``) across iterations."""

    label: str
    slug: str
    versions: dict[int, str]


@dataclass(frozen=True)
class DiffChoice:
    label: str
    old: int
    new: int
    diff: Diff


#: What the cost table calls a step's runs (other steps go by their name).
STAGES = {
    "plan": "plan",
    "review": "review",
    "implement": "implement",
    "code_review": "code review",
}


@dataclass
class StageCost:
    """The tokens and cost of one stage's agent runs, every iteration together."""

    stage: str
    runs: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    #: Whether any run reported a cost (else the table says so rather than $0).
    priced: bool = False


def stage_costs(runs: list[AgentRun]) -> list[StageCost]:
    """Per stage, in the order the stages first ran."""
    by_stage: dict[str, StageCost] = {}
    for run in runs:
        name = STAGES.get(run.step_name, humanize(run.step_name))
        cost = by_stage.setdefault(name, StageCost(name))
        cost.runs += 1
        cost.tokens_in += run.tokens_in or 0
        cost.tokens_out += run.tokens_out or 0
        if run.cost_usd is not None:
            cost.cost_usd += run.cost_usd
            cost.priced = True
    return list(by_stage.values())


def snapshot_of(run: AgentRun) -> str | None:
    """The commit an implementer's run left (its ``meta.snapshot``), when it left one."""
    meta = run.meta if isinstance(run.meta, dict) else {}
    snapshot = meta.get("snapshot")
    return snapshot if isinstance(snapshot, str) and snapshot else None


@dataclass(frozen=True)
class WorkflowView:
    workflow: Workflow
    groups: list[RunGroup]
    runs: dict[str, RunView]
    timeline: list[TimelineItem]
    documents: list[Document]
    iterations: list[int]
    last_event_id: int
    costs: list[StageCost] = field(default_factory=list)

    @property
    def commit(self) -> str | None:
        """The commit the workflow produced (``result["commit"]``), when it made one."""
        result = self.workflow.result
        found = result.get("commit") if isinstance(result, dict) else None
        return found if isinstance(found, str) and found else None

    def document(self, label: str | None) -> Document | None:
        return next((d for d in self.documents if d.label == label), None)

    def diff_texts(
        self, label: str | None, old: int | None, new: int | None
    ) -> tuple[str, int, int, str, str] | None:
        """The diff asked for, or by default the primary document's last two versions:
        ``(label, old version, new version, old text, new text)``."""
        doc = self.document(label) or next((d for d in self.documents if len(d.versions) > 1), None)
        if doc is None or len(doc.versions) < 2:
            return None
        versions = sorted(doc.versions)
        new_v = new if new in doc.versions else versions[-1]
        old_v = old if old in doc.versions else versions[max(0, versions.index(new_v) - 1)]
        return doc.label, old_v, new_v, doc.versions[old_v], doc.versions[new_v]


def resolved_text(cp: Checkpoint) -> str | None:
    """The content as the checkpoint left it: the person's edit, else the original."""
    if cp.resolution is not None and cp.resolution.edited_content is not None:
        return cp.resolution.edited_content
    return cp.editable_content


def edit_texts(checkpoints: list[Checkpoint]) -> dict[str, tuple[str, str]]:
    """Checkpoint id → (original, edited content), where a person edited the content."""
    return {
        cp.id: (cp.editable_content or "", cp.resolution.edited_content)
        for cp in checkpoints
        if cp.resolution is not None and cp.resolution.edited_content is not None
    }


def _slug(label: str, taken: set[str]) -> str:
    base = "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-") or "doc"
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    taken.add(slug)
    return slug


def documents_of(checkpoints: list[Checkpoint]) -> list[Document]:
    """Each editable label's text per iteration (the latest checkpoint of an iteration wins)."""
    by_label: dict[str, dict[int, str]] = {}
    for cp in sorted(checkpoints, key=lambda c: c.number):
        text = resolved_text(cp)
        if text is None or not text.strip():
            continue
        by_label.setdefault(cp.editable_label, {})[cp.iteration] = text
    taken: set[str] = set()
    return [Document(label, _slug(label, taken), v) for label, v in by_label.items()]


def _progress(events: list[Event]) -> dict[str, tuple[list[ProgressLine], int]]:
    lines: dict[str, list[ProgressLine]] = defaultdict(list)
    dropped: dict[str, int] = defaultdict(int)
    for ev in events:
        if ev.type is not EventType.AGENT_PROGRESS:
            continue
        run_id = str(ev.data.get("agent_run_id", ""))
        lines[run_id] += [
            ProgressLine(str(x.get("kind", "")), str(x.get("text", "")))
            for x in ev.data.get("lines", [])
            if isinstance(x, dict)
        ]
        dropped[run_id] += int(ev.data.get("dropped") or 0)
    out = {}
    for run_id, got in lines.items():
        cut = max(0, len(got) - MAX_PROGRESS_LINES)
        out[run_id] = (got[cut:], dropped[run_id] + cut)
    return out


def workflow_view(history: History, edits: Mapping[str, Diff] | None = None) -> WorkflowView:
    """The page's view; ``edits`` are the diffs of :func:`edit_texts` (by checkpoint id)."""
    wf = history.workflow
    progress = _progress(history.events)
    runs: dict[str, RunView] = {}
    groups: list[RunGroup] = []
    index: dict[tuple[int, int], RunGroup] = {}
    for run in history.agent_runs:
        lines, dropped = progress.get(run.id, ([], 0))
        view = RunView(run, lines, dropped)
        runs[run.id] = view
        key = (run.iteration, run.step_index)
        if key not in index:
            index[key] = RunGroup(run.iteration, run.step_name, [])
            groups.append(index[key])
        index[key].runs.append(view)

    timeline = [TimelineItem(wf.created_at, note="created")]
    for cp in history.checkpoints:
        chosen = cp.action(cp.resolution.action) if cp.resolution else None
        label = chosen.label if chosen else (cp.resolution.action if cp.resolution else "")
        edit = (edits or {}).get(cp.id)
        timeline.append(
            TimelineItem(
                cp.created_at,
                checkpoint=cp,
                edit=edit if edit is not None and edit.changed else None,
                action_label=label,
            )
        )
    timeline += [TimelineItem(r.started_at, run=r) for r in history.agent_runs]
    if wf.finished_at is not None:
        timeline.append(TimelineItem(wf.finished_at, note="finished"))
    timeline.sort(key=lambda item: item.at)

    iterations = sorted(
        {1, wf.iteration}
        | {cp.iteration for cp in history.checkpoints}
        | {r.iteration for r in history.agent_runs}
    )
    return WorkflowView(
        workflow=wf,
        groups=groups,
        runs=runs,
        timeline=timeline,
        documents=documents_of(history.checkpoints),
        iterations=list(range(1, max(iterations) + 1)),
        last_event_id=history.events[-1].id if history.events else 0,
        costs=stage_costs(history.agent_runs),
    )
