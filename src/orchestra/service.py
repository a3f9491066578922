"""The operations shared by the HTTP API, the web pages, the CLI and Python users.

Every function validates its input before writing anything (bad input raises
:class:`InvalidInput` and changes nothing), then makes one call through the
engine's front door (:class:`orchestra.engine.api.Engine`); reads go to the
store's queries. Nothing here writes SQL or keeps workflow state in memory.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from orchestra.agents.config import AgentsConfig, default_agents_config
from orchestra.domain.code import WorktreeInfo
from orchestra.domain.deadlines import (
    DeadlinePolicy,
    DeadlineRequest,
    StepDeadline,
    deadline_policy,
)
from orchestra.domain.durations import parse_duration, parse_moment
from orchestra.domain.errors import InvalidInput, NotFound, OrchestraError
from orchestra.domain.models import (
    INBOX_COUNT_CAP,
    MAX_BATCH,
    MAX_SNOOZE_DAYS,
    BatchItem,
    BatchResult,
    Checkpoint,
    Decision,
    Event,
    History,
    InboxCount,
    InboxFilter,
    Page,
    Workflow,
)
from orchestra.domain.statuses import BatchOutcome, CheckpointStatus, WorkflowStatus
from orchestra.engine.api import Engine, NewWorkflow, WorkerSettings, get_definition
from orchestra.engine.checkpoints import ResolutionConflict
from orchestra.engine.definition import CheckpointStep, WorkflowDefinition, definitions
from orchestra.store import queries, settled
from orchestra.store.db import Database, utcnow
from orchestra.workflows import git_worktree

log = logging.getLogger(__name__)

MAX_NAME_CHARS = 200
MAX_PROMPT_CHARS = 200_000
MAX_ITERATIONS_LIMIT = 20
#: Matches listed when a short id is ambiguous.
MAX_PREFIX_MATCHES = 10
_ID_PREFIX = re.compile(r"[0-9a-f]{4,32}")
#: Event ids are 64-bit; a larger cursor is bad input, not an overflow in the driver.
MAX_EVENT_ID = 2**63 - 1
#: The longest ``older_than`` an inbox filter takes.
MAX_AGE = timedelta(days=3650)


class Orchestra:
    """The service layer: one instance per process, around one database."""

    def __init__(
        self,
        db: Database,
        *,
        agents: AgentsConfig | None = None,
        allowed_roots: Sequence[Path] = (),
        worker: WorkerSettings | None = None,
        checks: Callable[[Path], dict[str, Any] | None] | None = None,
        deadlines: Mapping[str, StepDeadline] | None = None,
    ) -> None:
        self.db = db
        self.agents = agents or default_agents_config()
        #: Where workspaces may lie (empty: the user's home directory).
        self.allowed_roots = [p.expanduser().resolve() for p in allowed_roots or [Path.home()]]
        #: The check command (and its timeout) of a workspace, from the operator's settings.
        self.checks = checks or (lambda _: None)
        #: The operator's ``[deadlines.<step>]`` tables, checked against the definitions.
        self.deadlines = check_step_deadlines(deadlines or {})
        #: The engine: every write goes through it (``worker``: its worker's settings).
        self.engine = Engine(db, worker)
        #: What "now" is for snoozes and ages (tests move it; the database's own
        #: timestamps come from each transaction).
        self.clock: Callable[[], datetime] = utcnow
        #: Where the inbox's counts stop (a badge says "1000+").
        self.inbox_count_cap = INBOX_COUNT_CAP

    # -- workflows -----------------------------------------------------------

    async def create_workflow(
        self,
        *,
        name: str,
        prompt: str,
        type: str = "plan_review",
        workspace_path: str | None = None,
        agents: Mapping[str, Any] | None = None,
        max_iterations: int = 3,
        created_by: str | None = None,
        options: Mapping[str, Any] | None = None,
        from_workflow: str | None = None,
        deadline: DeadlineRequest | Mapping[str, Any] | None = None,
    ) -> Workflow:
        """Start a workflow. ``from_workflow``: a completed workflow this one continues
        (its result goes to the new one's definition, e.g. an approved plan to
        implement; its workspace is the default). ``deadline``: a due time for its
        checkpoints and the opt-in to a default action (:class:`DeadlineRequest`)."""
        definition = get_definition(type)
        policy = self._deadline_policy(definition, deadline)
        previous = None
        if from_workflow is not None:
            previous = await self.get_workflow(from_workflow)
            if previous.status is not WorkflowStatus.COMPLETED or previous.result is None:
                raise InvalidInput(
                    f"workflow {from_workflow} is {previous.status.value}; only a completed "
                    "workflow can be continued",
                    details={"field": "from_workflow"},
                )
            workspace_path = workspace_path or previous.workspace_path
        name, prompt = name.strip(), prompt.strip()
        if not name or len(name) > MAX_NAME_CHARS:
            raise InvalidInput(
                f"name must be 1–{MAX_NAME_CHARS} characters", details={"field": "name"}
            )
        if not prompt or len(prompt) > MAX_PROMPT_CHARS:
            raise InvalidInput(
                f"prompt must be 1–{MAX_PROMPT_CHARS} characters", details={"field": "prompt"}
            )
        if not 1 <= max_iterations <= MAX_ITERATIONS_LIMIT:
            raise InvalidInput(
                f"max_iterations must be between 1 and {MAX_ITERATIONS_LIMIT}",
                details={"field": "max_iterations"},
            )
        workspace = self._check_workspace(workspace_path) if workspace_path else None
        resolved = self.resolve_agents(agents, jobs=definition.agent_jobs)
        if "implementer" in definition.agent_jobs and workspace is not None:
            resolved["check"] = self.checks(Path(workspace))
        new = NewWorkflow(
            name=name,
            type=definition.type,
            prompt=prompt,
            agents=resolved,
            max_iterations=max_iterations,
            workspace_path=workspace,
            created_by=created_by,
            options=dict(options) if options else None,
            previous_result=previous.result if previous is not None else None,
            deadline=policy,
        )
        return (await self.engine.create(new)).value

    def _deadline_policy(
        self, definition: WorkflowDefinition[Any], raw: DeadlineRequest | Mapping[str, Any] | None
    ) -> DeadlinePolicy | None:
        """What the workflow records of its deadlines; bad input names the field."""
        request = raw if isinstance(raw, DeadlineRequest) or raw is None else _deadline(raw)
        offered = checkpoint_actions(definition)
        steps = {n: d for n, d in self.deadlines.items() if n in offered}
        if request is not None:
            if request.after is None and not steps:
                raise InvalidInput(
                    f"deadline.after is needed: no checkpoint of a {definition.type!r} workflow "
                    "has a configured deadline",
                    details={"field": "deadline.after"},
                )
            every = sorted({a for actions in offered.values() for a in actions})
            if request.default_action is not None and request.default_action not in every:
                raise InvalidInput(
                    f"deadline.default_action {request.default_action!r} is offered by no "
                    f"checkpoint of a {definition.type!r} workflow; choose one of: "
                    + ", ".join(every),
                    details={"field": "deadline.default_action", "allowed": every},
                )
        return deadline_policy(request, steps)

    # -- short ids -----------------------------------------------------------

    async def expand_id(self, kind: Literal["workflow", "checkpoint"], given: str) -> str:
        """The full id of the workflow or checkpoint whose id starts with ``given`` (at
        least 4 hex digits, as git takes a commit's); an ambiguous prefix is bad input
        that lists the matches, an unknown one is not found."""
        given = given.strip().lower()
        if not _ID_PREFIX.fullmatch(given):
            raise InvalidInput(
                f"{kind} id {given[:40]!r} must be 4 to 32 hex digits (a full id or its start)",
                details={"field": f"{kind}_id"},
            )
        if len(given) == 32:
            return given
        found = await self.db.read(
            lambda c: queries.ids_with_prefix(c, kind, given, MAX_PREFIX_MATCHES + 1)
        )
        if not found:
            raise NotFound(f"no {kind} id starts with {given!r}")
        if len(found) > 1:
            shown = ", ".join(found[:MAX_PREFIX_MATCHES])
            more = " …" if len(found) > MAX_PREFIX_MATCHES else ""
            raise InvalidInput(
                f"{given!r} is the start of several {kind} ids ({shown}{more}); give more digits",
                details={"field": f"{kind}_id", "matches": found[:MAX_PREFIX_MATCHES]},
            )
        return found[0]

    # -- worktrees (Implement & Review) --------------------------------------

    async def worktrees(self, workspace_path: str, *, prune: bool = False) -> list[WorktreeInfo]:
        """Orchestra's worktrees in a repository, each with its workflow; with
        ``prune``, those whose workflow ended or is unknown are removed (with their
        snapshots; branches stay, they may hold a commit)."""
        workspace = self._check_workspace(workspace_path)
        known = dict(
            await self.db.read(
                lambda c: queries.workflows_in_workspace(c, workspace, "plan_implement")
            )
        )
        found = await asyncio.to_thread(git_worktree.worktree_branches, Path(workspace))
        listed = []
        for path, branch in sorted(found.items()):
            prefix = (branch or path.name).rsplit("-", 1)[-1]
            owner = next((wid for wid in known if prefix and wid.startswith(prefix)), None)
            status = known.get(owner) if owner else None
            info = WorktreeInfo(
                path=str(path), branch=branch, workflow_id=owner, workflow_status=status
            )
            # A failed workflow may be retried: its worktree stays until it ends.
            ended = status in (None, WorkflowStatus.COMPLETED, WorkflowStatus.CANCELLED)
            if prune and ended:
                await asyncio.to_thread(git_worktree.prune_worktree, Path(workspace), path, owner)
                continue
            listed.append(info)
        return listed

    def _check_workspace(self, raw: str) -> str:
        where = {"field": "workspace_path"}
        try:
            path = Path(raw).expanduser()
        except RuntimeError:  # "~someone" for a user this machine does not have
            raise InvalidInput(
                f"workspace_path {raw[:200]!r} names an unknown user's home", details=where
            ) from None
        if not path.is_absolute():
            raise InvalidInput("workspace_path must be an absolute path", details=where)
        resolved = path.resolve()  # symlinks first: the check is on where it really is
        how = (
            "to allow another root, set ORCHESTRA_ALLOWED_ROOTS (':'-separated) or "
            "allowed_roots in orchestra.toml"
        )
        if not any(resolved.is_relative_to(r) for r in self.allowed_roots):
            roots = ", ".join(str(r) for r in self.allowed_roots)
            raise InvalidInput(
                f"workspace {raw!r} is outside the allowed roots ({roots}); {how}", details=where
            )
        guarded = self._guarded_dir(resolved)
        if guarded is not None:
            raise InvalidInput(
                f"workspace {raw!r} is in {guarded}, a system or secrets directory, where "
                f"agents must not work; {how} (a root at or inside {guarded})",
                details=where,
            )
        if not resolved.exists():
            raise InvalidInput(f"workspace {raw!r} does not exist", details=where)
        if not resolved.is_dir():
            raise InvalidInput(f"workspace {raw!r} is not a directory", details=where)
        return str(resolved)

    def _guarded_dir(self, resolved: Path) -> Path | None:
        """The system or secrets directory ``resolved`` lies in, unless a configured root
        at or inside that directory lets it in (an operator's explicit choice)."""
        for guarded in guarded_dirs():
            inside = (
                resolved == guarded if guarded == Path("/") else resolved.is_relative_to(guarded)
            )
            if inside and not any(
                r.is_relative_to(guarded) and resolved.is_relative_to(r) for r in self.allowed_roots
            ):
                return guarded
        return None

    def resolve_agents(
        self, raw: Mapping[str, Any] | None, *, jobs: Sequence[str] = ("planner", "reviewers")
    ) -> dict[str, Any]:
        """The ``agents`` choice, by configured name only, as the workflow records it:
        a client never supplies an adapter, its options or a timeout. ``jobs``: the
        ones the workflow type has."""
        raw = dict(raw or {})
        unknown = set(raw) - set(jobs)
        if unknown:
            raise InvalidInput(
                f"unknown agents field(s): {', '.join(sorted(unknown))}; use " + ", ".join(jobs),
                details={"field": "agents"},
            )
        planner = raw.get("planner")
        planner = self._agent(self.agents.planner if planner is None else planner, "agents.planner")
        reviewers_raw = raw.get("reviewers")
        if reviewers_raw is None:
            reviewers_raw = list(self.agents.reviewers)
        reviewers = self._agent_list(reviewers_raw, "agents.reviewers")
        resolved = {
            "planner": planner,
            "reviewers": reviewers,
            "planner_timeout_s": self.agents.planner_timeout_s,
            "reviewer_timeout_s": self.agents.reviewer_timeout_s,
            "max_timeout_s": self.agents.max_timeout_s,
        }
        if "implementer" in jobs:
            implementer = raw.get("implementer")
            resolved["implementer"] = self._agent(
                implementer or self.agents.implementer or raw.get("planner") or self.agents.planner,
                "agents.implementer",
            )
            resolved["implementer_timeout_s"] = self.agents.implementer_timeout_s
        if "code_reviewers" in jobs:
            chosen = raw.get("code_reviewers")
            if chosen is None:
                chosen = list(self.agents.code_reviewers or reviewers_raw)
            resolved["code_reviewers"] = self._agent_list(chosen, "agents.code_reviewers")
        return resolved

    def _agent_list(self, given: Any, where: str) -> list[dict[str, Any]]:
        if not isinstance(given, list) or not given:
            raise InvalidInput(
                f"{where} must be a non-empty list of configured agent names "
                f"({self._agent_names()})",
                details={"field": where},
            )
        return [self._agent(r, f"{where}[{i}]") for i, r in enumerate(given)]

    def _agent_names(self) -> str:
        return ", ".join(sorted(self.agents.agents))

    def _agent(self, entry: Any, where: str) -> dict[str, Any]:
        configured = self.agents.agents.get(entry) if isinstance(entry, str) else None
        if configured is None:
            given = f"{entry!r}" if isinstance(entry, str) else f"a {type(entry).__name__}"
            raise InvalidInput(
                f"{where} must be the name of a configured agent, one of: "
                f"{self._agent_names()} (got {given[:80]}); adapters and their options are "
                "set by the operator in the agents file",
                details={"field": where, "configured": sorted(self.agents.agents)},
            )
        return {
            "name": configured.name,
            "adapter": configured.adapter,
            "options": dict(configured.options),
            "timeout_s": configured.timeout_s,
        }

    async def get_workflow(self, workflow_id: str) -> Workflow:
        return await self.db.read(lambda c: queries.get_workflow(c, workflow_id))

    async def list_workflows(
        self,
        *,
        statuses: Sequence[WorkflowStatus] | None = None,
        limit: int = 50,
        cursor: str | None = None,
        before: str | None = None,
    ) -> Page[Workflow]:
        _check_limit(limit)
        return await self.db.read(
            lambda c: queries.list_workflows(
                c, statuses=statuses, limit=limit, cursor=cursor, before=before
            )
        )

    async def workflow_names(self, ids: Sequence[str]) -> dict[str, str]:
        return await self.db.read(lambda c: queries.workflow_names(c, ids))

    # -- checkpoints ---------------------------------------------------------

    async def list_checkpoints(
        self,
        *,
        status: CheckpointStatus | None = CheckpointStatus.PENDING,
        workflow_id: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        filter: InboxFilter | None = None,
        before: str | None = None,
    ) -> Page[Checkpoint]:
        """Checkpoints oldest first; ``filter`` narrows them (by default, snoozed
        ones are hidden until their time passes)."""
        _check_limit(limit)
        given = filter or InboxFilter()
        now = self.clock()
        prefix = _workflow_prefix(given.workflow) if given.workflow is not None else None
        step = self._checked_step(given.step) if given.step is not None else None
        created_before = None
        if given.older_than is not None:
            age = parse_duration(given.older_than, field="older_than", maximum=MAX_AGE)
            created_before = now - age
        return await self.db.read(
            lambda c: queries.list_checkpoints(
                c,
                status=status,
                workflow_id=workflow_id,
                limit=limit,
                cursor=cursor,
                workflow_prefix=prefix,
                step=step,
                created_before=created_before,
                before=before,
                snoozed=given.snoozed,
                now=now,
            )
        )

    async def count_inbox(self) -> InboxCount:
        """How many wait now, how many are snoozed (each up to :attr:`inbox_count_cap`
        + 1), and when the next one comes back."""
        now, cap = self.clock(), self.inbox_count_cap
        return await self.db.read(lambda c: queries.count_inbox(c, now, cap))

    @staticmethod
    def checkpoint_steps() -> list[str]:
        """The names of every known workflow's checkpoint steps (what ``step`` filters by)."""
        return sorted(
            {
                name
                for definition in definitions().values()
                for name, step in definition.steps.items()
                if isinstance(step, CheckpointStep)
            }
        )

    def _checked_step(self, step: str) -> str:
        known = self.checkpoint_steps()
        if step not in known:
            raise InvalidInput(
                f"step {step[:64]!r} is not a checkpoint step; use one of: {', '.join(known)}",
                details={"field": "step", "allowed": known},
            )
        return step

    async def snooze(self, checkpoint_id: str, until: str | datetime, *, actor: str) -> Checkpoint:
        """Say "not now": hide a pending checkpoint from the inbox until ``until`` (a
        duration such as ``2h`` or an ISO time with a timezone; in the future, at most
        :data:`MAX_SNOOZE_DAYS` days ahead). Not a decision: it stays pending and may
        still be resolved; it comes back by itself when the time passes. A resolved
        checkpoint is a conflict (409)."""
        now = self.clock()
        moment = parse_moment(until, now, field="until") if isinstance(until, str) else until
        if moment.tzinfo is None:
            raise InvalidInput("until needs a timezone", details={"field": "until"})
        if moment <= now:
            raise InvalidInput(
                f"until ({moment.isoformat()}) has passed; give a time in the future or a "
                "duration such as 2h",
                details={"field": "until"},
            )
        if moment > now + timedelta(days=MAX_SNOOZE_DAYS):
            raise InvalidInput(
                f"until may be at most {MAX_SNOOZE_DAYS} days ahead; a checkpoint snoozed "
                "longer is one to decide (or cancel) now",
                details={"field": "until"},
            )
        return (await self.engine.snooze(checkpoint_id, moment, actor=actor)).value

    async def unsnooze(self, checkpoint_id: str, *, actor: str) -> Checkpoint:
        """Bring a snoozed checkpoint back into the inbox now (recorded as a snooze
        event with no time)."""
        return (await self.engine.snooze(checkpoint_id, None, actor=actor)).value

    async def pending_by_workflow(self, workflow_ids: Sequence[str]) -> dict[str, int]:
        """What waits for a person in each of these workflows (snoozed ones left out)."""
        now = self.clock()
        return await self.db.read(lambda c: queries.pending_by_workflow(c, workflow_ids, now))

    async def get_checkpoint(self, checkpoint_id: str) -> Checkpoint:
        return await self.db.read(lambda c: queries.get_checkpoint(c, checkpoint_id))

    async def resolve(
        self,
        checkpoint_id: str,
        decision: Decision,
        *,
        actor: str,
        idempotency_key: str | None = None,
    ) -> Checkpoint:
        """Resolve a checkpoint; raises ResolutionConflict if someone else already did."""
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= 200:
            raise InvalidInput(
                "Idempotency-Key must be 1–200 characters", details={"field": "idempotency_key"}
            )
        resolved = await self.engine.resolve(
            checkpoint_id, decision, actor=actor, idempotency_key=idempotency_key
        )
        return resolved.value

    async def resolve_batch(
        self,
        checkpoint_ids: Sequence[str],
        decision: Decision,
        *,
        actor: str,
        idempotency_key: str | None = None,
    ) -> BatchResult:
        """Apply one decision to several checkpoints, each as its own exactly-once
        resolution with its own audit row; what happened to each, in order (one that
        was already resolved elsewhere is reported, the rest still applied)."""
        if not 1 <= len(checkpoint_ids) <= MAX_BATCH:
            raise InvalidInput(
                f"give 1–{MAX_BATCH} checkpoint ids", details={"field": "checkpoint_ids"}
            )
        if len(set(checkpoint_ids)) != len(checkpoint_ids):
            raise InvalidInput(
                "a checkpoint id is given twice", details={"field": "checkpoint_ids"}
            )
        items = []
        for cp_id in checkpoint_ids:
            key = f"{idempotency_key}:{cp_id}" if idempotency_key is not None else None
            outcome, message, checkpoint = BatchOutcome.RESOLVED, "", None
            try:
                checkpoint = await self.resolve(cp_id, decision, actor=actor, idempotency_key=key)
            except ResolutionConflict as exc:
                outcome, message, checkpoint = (
                    BatchOutcome.ALREADY_RESOLVED,
                    exc.message,
                    exc.checkpoint,
                )
            except NotFound as exc:
                outcome, message = BatchOutcome.NOT_FOUND, exc.message
            except InvalidInput as exc:
                outcome, message = BatchOutcome.INVALID, exc.message
            except OrchestraError as exc:
                log.warning("batch resolution of %s failed: %s", cp_id, exc.message)
                outcome, message = BatchOutcome.FAILED, exc.message
            items.append(
                BatchItem(
                    checkpoint_id=cp_id, outcome=outcome, message=message, checkpoint=checkpoint
                )
            )
        return BatchResult(items=items)

    # -- cancel and retry ----------------------------------------------------

    async def cancel(self, workflow_id: str, *, actor: str) -> Workflow:
        return (await self.engine.cancel(workflow_id, actor=actor)).value

    async def retry(self, workflow_id: str, *, actor: str) -> Workflow:
        """Run a failed workflow's current step again (a recorded transition)."""
        return (await self.engine.retry(workflow_id, actor=actor)).value

    # -- history and events --------------------------------------------------

    async def last_event_id(self) -> int:
        """The newest event's id: read it before a page's data, then follow the
        events after it, and nothing is missed."""
        return await self.db.read(settled.end)

    async def history(self, workflow_id: str) -> History:
        def read(c: Any) -> History:
            return History(
                workflow=queries.get_workflow(c, workflow_id),
                checkpoints=queries.checkpoints_of(c, workflow_id),
                agent_runs=queries.agent_runs_of(c, workflow_id),
                events=queries.events_after(c, workflow_id=workflow_id, after=0, limit=100_000),
            )

        return await self.db.read(read)

    async def events_after(
        self, *, workflow_id: str | None = None, after: int = 0, limit: int = 500
    ) -> list[Event]:
        _check_limit(limit, 5000)
        if not 0 <= after <= MAX_EVENT_ID:
            raise InvalidInput(
                f"after must be between 0 and {MAX_EVENT_ID}", details={"field": "after"}
            )
        found = await self.db.read(
            lambda c: settled.read(c, after=after, limit=limit, workflow_id=workflow_id)
        )
        return found.events


def _deadline(raw: Mapping[str, Any]) -> DeadlineRequest:
    """A client's ``deadline`` object, checked; InvalidInput naming the field."""
    try:
        return DeadlineRequest.model_validate(dict(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(["deadline", *map(str, first["loc"])])
        raise InvalidInput(
            f"{field}: {first['msg'].removeprefix('Value error, ')}", details={"field": field}
        ) from None


def checkpoint_actions(definition: WorkflowDefinition[Any]) -> dict[str, list[str]]:
    """The actions each checkpoint step of ``definition`` may offer, by step name."""
    return {
        name: [a.name for a in step.actions]
        for name, step in definition.steps.items()
        if isinstance(step, CheckpointStep)
    }


def check_step_deadlines(deadlines: Mapping[str, StepDeadline]) -> dict[str, StepDeadline]:
    """The operator's per-step deadlines, each naming a checkpoint step of a known
    workflow and an action such a step offers; InvalidInput (at start-up) otherwise."""
    known: dict[str, set[str]] = {}
    for definition in definitions().values():
        for step, actions in checkpoint_actions(definition).items():
            known.setdefault(step, set()).update(actions)
    for step, deadline in deadlines.items():
        if step not in known:
            raise InvalidInput(
                f"[deadlines.{step}]: no workflow has a checkpoint step named {step!r}; "
                "checkpoint steps: " + ", ".join(sorted(known)),
                details={"field": f"deadlines.{step}"},
            )
        if deadline.action is not None and deadline.action not in known[step]:
            raise InvalidInput(
                f"[deadlines.{step}]: action {deadline.action!r} is not offered at {step!r}; "
                "it offers: " + ", ".join(sorted(known[step])),
                details={"field": f"deadlines.{step}.action"},
            )
    return dict(deadlines)


def guarded_dirs() -> list[Path]:
    """Directories no workspace may be in by default: the system's, and the user's
    secrets (``/`` itself only exactly; the home directory is never one)."""
    home = Path.home().resolve()
    system = ["/", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/boot", "/dev"]
    system += ["/proc", "/sys", "/var", "/root", "/run"]
    found = [Path(p) for p in system if Path(p) != home]
    found += [home / name for name in (".ssh", ".gnupg", ".aws", ".config")]
    return found


def _workflow_prefix(given: str) -> str:
    """A workflow filter as a lowercase id prefix (4–32 hex digits)."""
    prefix = given.strip().lower()
    if not _ID_PREFIX.fullmatch(prefix):
        raise InvalidInput(
            f"workflow {given[:40]!r} must be a workflow id or its first 4+ hex digits",
            details={"field": "workflow"},
        )
    return prefix


def _check_limit(limit: int, maximum: int = 500) -> None:
    if not 1 <= limit <= maximum:
        raise InvalidInput(f"limit must be between 1 and {maximum}", details={"field": "limit"})
