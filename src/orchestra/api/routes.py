"""The REST API under ``/api``: thin handlers over the service layer.

Response models are the domain models (one contract). Each handler checks the
caller's permission, passes the caller's name as the actor, and lets domain
errors reach the one error mapping (:mod:`orchestra.api.errors`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from orchestra.api.auth import Principal, require, runtime_of
from orchestra.api.errors import error_responses
from orchestra.api.streams import After
from orchestra.domain.code import CodeChange, WorktreeInfo
from orchestra.domain.deadlines import DeadlineRequest
from orchestra.domain.durations import MAX_TEXT
from orchestra.domain.errors import NotFound
from orchestra.domain.models import (
    MAX_BATCH,
    MAX_SNOOZE_DAYS,
    BatchResult,
    Checkpoint,
    Decision,
    Event,
    History,
    InboxCount,
    InboxFilter,
    Notification,
    NotificationDetail,
    NotificationsPruned,
    Page,
    Workflow,
)
from orchestra.domain.roles import Permission, Role
from orchestra.domain.statuses import (
    CheckpointStatus,
    NotificationStatus,
    SnoozedView,
    WorkflowStatus,
)
from orchestra.domain.untrusted import Text, request_problem
from orchestra.notifications import admin as notification_admin
from orchestra.service import MAX_ITERATIONS_LIMIT, MAX_NAME_CHARS, MAX_PROMPT_CHARS, Orchestra
from orchestra.store import outbox, tokens
from orchestra.store.tokens import TokenInfo

router = APIRouter(prefix="/api", responses=error_responses(401, 422, 503))

Reader = Annotated[Principal, Depends(require(Permission.READ))]
Creator = Annotated[Principal, Depends(require(Permission.CREATE))]
Resolver = Annotated[Principal, Depends(require(Permission.RESOLVE))]
Canceller = Annotated[Principal, Depends(require(Permission.CANCEL))]
Retrier = Annotated[Principal, Depends(require(Permission.RETRY))]
Admin = Annotated[Principal, Depends(require(Permission.MANAGE_TOKENS))]

Limit = Annotated[int, Query(description="page size")]
Cursor = Annotated[str | None, Query(description="the next_cursor of the previous page")]
Before = Annotated[
    str | None, Query(description="the prev_cursor of the next page: the page before it")
]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        """The whole body, free-form parts too (``options``): not too deep, all text encodable.

        Deeper bodies used to reach ``orjson`` (254 levels) or the database as a 500.
        """
        problem = request_problem(data)
        if problem is not None:
            raise ValueError(problem)
        return data


#: A configured agent's name. Typed loosely on purpose so that anything else (an
#: object with an adapter and options, say) reaches the service, whose 422 lists
#: the configured names; the contract still says "a string".
AgentName = Annotated[
    Any,
    WithJsonSchema({"type": "string", "description": "the name of a configured agent"}),
]


#: A list of configured agents' names (typed loosely, as :data:`AgentName`).
AgentNames = Annotated[
    Any,
    WithJsonSchema(
        {"type": "array", "items": {"type": "string"}, "description": "configured names"}
    ),
]


class AgentsChoice(Body):
    """Which configured agents do each job; omitted: the configured jobs. The
    implementer and code reviewers are for ``plan_implement``."""

    planner: AgentName | None = None
    reviewers: AgentNames = None
    implementer: AgentName | None = None
    code_reviewers: AgentNames = None


class CreateWorkflow(Body):
    name: Annotated[Text, Field(min_length=1, max_length=MAX_NAME_CHARS)]
    type: Text = "plan_review"
    prompt: Annotated[Text, Field(min_length=1, max_length=MAX_PROMPT_CHARS)]
    workspace_path: Text | None = None
    agents: AgentsChoice | None = None
    max_iterations: Annotated[int, Field(ge=1, le=MAX_ITERATIONS_LIMIT)] = 3
    #: Options of the workflow type (``plan_implement``: ``plan``, ``keep_worktree``).
    options: dict[Text, Any] | None = None
    #: A completed workflow this one continues (e.g. the Plan & Review whose plan to
    #: implement); its workspace is the default.
    from_workflow: Text | None = None
    #: A due time for each checkpoint and the opt-in to a default action there.
    deadline: DeadlineRequest | None = None


class Resolve(Body, Decision):
    """The body of a resolution: a :class:`Decision`, checked as any client body is."""


class CreateToken(Body):
    name: Text
    role: Role


class CreatedToken(BaseModel):
    token: str = Field(description="shown once; store it now")
    info: TokenInfo


def _service(request: Request) -> Orchestra:
    return runtime_of(request).service


# -- workflows ---------------------------------------------------------------


@router.post(
    "/workflows",
    status_code=201,
    tags=["workflows"],
    responses=error_responses(400, 401, 403, 413, 422, 503),
)
async def create_workflow(request: Request, body: CreateWorkflow, who: Creator) -> Workflow:
    agents = body.agents.model_dump(exclude_none=True) if body.agents else None
    return await _service(request).create_workflow(
        name=body.name,
        prompt=body.prompt,
        type=body.type,
        workspace_path=body.workspace_path,
        agents=agents,
        max_iterations=body.max_iterations,
        created_by=who.name,
        options=body.options,
        from_workflow=body.from_workflow,
        deadline=body.deadline,
    )


@router.get("/workflows", tags=["workflows"], responses=error_responses(401, 403, 422))
async def list_workflows(
    request: Request,
    _: Reader,
    status: Annotated[list[WorkflowStatus] | None, Query()] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    before: Before = None,
) -> Page[Workflow]:
    """Newest first; ``cursor`` pages to older ones, ``before`` back to newer ones."""
    return await _service(request).list_workflows(
        statuses=status, limit=limit, cursor=cursor, before=before
    )


@router.get("/workflows/{workflow_id}", tags=["workflows"], responses=error_responses(401, 404))
async def get_workflow(request: Request, workflow_id: str, _: Reader) -> Workflow:
    return await _service(request).get_workflow(workflow_id)


@router.post(
    "/workflows/{workflow_id}/cancel",
    tags=["workflows"],
    responses=error_responses(401, 403, 404, 409),
)
async def cancel_workflow(request: Request, workflow_id: str, who: Canceller) -> Workflow:
    return await _service(request).cancel(workflow_id, actor=who.name)


@router.post(
    "/workflows/{workflow_id}/retry",
    tags=["workflows"],
    responses=error_responses(401, 403, 404, 409),
)
async def retry_workflow(request: Request, workflow_id: str, who: Retrier) -> Workflow:
    return await _service(request).retry(workflow_id, actor=who.name)


@router.get(
    "/workflows/{workflow_id}/history", tags=["workflows"], responses=error_responses(401, 404)
)
async def workflow_history(request: Request, workflow_id: str, _: Reader) -> History:
    """Checkpoints with their resolutions, agent runs and events, in order."""
    return await _service(request).history(workflow_id)


@router.get(
    "/workflows/{workflow_id}/events", tags=["events"], responses=error_responses(401, 404, 422)
)
async def workflow_events(
    request: Request,
    workflow_id: str,
    _: Reader,
    after: After = 0,
    limit: Limit = 500,
) -> Page[Event]:
    """Events after ``after``; ``next_cursor`` is set when the page is full."""
    service = _service(request)
    await service.get_workflow(workflow_id)
    items = await service.events_after(workflow_id=workflow_id, after=after, limit=limit)
    nxt = str(items[-1].id) if items and len(items) == limit else None
    return Page[Event](items=items, next_cursor=nxt)


# -- checkpoints -------------------------------------------------------------


@router.get("/checkpoints", tags=["checkpoints"], responses=error_responses(401, 403, 422))
async def list_checkpoints(
    request: Request,
    _: Reader,
    status: Annotated[
        CheckpointStatus | Literal["any"], Query(description="a status, or any")
    ] = CheckpointStatus.PENDING,
    workflow_id: str | None = None,
    workflow: Annotated[
        str | None, Query(max_length=32, description="a workflow id or its first 4+ hex digits")
    ] = None,
    step: Annotated[
        str | None, Query(max_length=64, description="a checkpoint step's name")
    ] = None,
    older_than: Annotated[
        str | None,
        Query(max_length=MAX_TEXT, description="only those waiting longer: 30m, 2h, 1d"),
    ] = None,
    snoozed: Annotated[
        SnoozedView,
        Query(description="hide (default): snoozed ones are left out until their time passes"),
    ] = SnoozedView.HIDE,
    limit: Limit = 100,
    cursor: Cursor = None,
    before: Before = None,
) -> Page[Checkpoint]:
    """The inbox across workflows: oldest first, filterable by workflow, step and age;
    checkpoints snoozed until a time still to come are left out unless asked for.
    ``cursor`` pages on, ``before`` back."""
    return await _service(request).list_checkpoints(
        status=None if status == "any" else CheckpointStatus(status),
        workflow_id=workflow_id,
        limit=limit,
        cursor=cursor,
        filter=InboxFilter(workflow=workflow, step=step, older_than=older_than, snoozed=snoozed),
        before=before,
    )


@router.get("/checkpoints/count", tags=["checkpoints"], responses=error_responses(401, 403))
async def count_checkpoints(request: Request, _: Reader) -> InboxCount:
    """How many checkpoints wait now (the dashboard's badge and tab title), how many
    are snoozed, and when the next snoozed one comes back."""
    return await _service(request).count_inbox()


class Snooze(Body):
    until: Annotated[
        Text,
        Field(
            min_length=1,
            max_length=MAX_TEXT,
            description="a duration (30m, 2h, 1d) or an ISO 8601 time with a timezone; "
            f"in the future, at most {MAX_SNOOZE_DAYS} days ahead",
        ),
    ]


@router.post(
    "/checkpoints/{checkpoint_id}/snooze",
    tags=["checkpoints"],
    responses=error_responses(400, 401, 403, 404, 409, 413, 422),
)
async def snooze_checkpoint(
    request: Request, checkpoint_id: str, body: Snooze, who: Resolver
) -> Checkpoint:
    """Not now: leave a pending checkpoint out of the inbox until ``until`` (it stays
    pending and can still be resolved; it comes back by itself). 409 when it was
    already resolved."""
    return await _service(request).snooze(checkpoint_id, body.until, actor=who.name)


@router.delete(
    "/checkpoints/{checkpoint_id}/snooze",
    tags=["checkpoints"],
    responses=error_responses(400, 401, 403, 404, 409),
)
async def unsnooze_checkpoint(request: Request, checkpoint_id: str, who: Resolver) -> Checkpoint:
    """Bring a snoozed checkpoint back into the inbox now."""
    return await _service(request).unsnooze(checkpoint_id, actor=who.name)


@router.get(
    "/checkpoints/{checkpoint_id}", tags=["checkpoints"], responses=error_responses(401, 404)
)
async def get_checkpoint(request: Request, checkpoint_id: str, _: Reader) -> Checkpoint:
    return await _service(request).get_checkpoint(checkpoint_id)


@router.get(
    "/checkpoints/{checkpoint_id}/code",
    tags=["checkpoints"],
    responses=error_responses(401, 404),
)
async def get_checkpoint_code(request: Request, checkpoint_id: str, _: Reader) -> CodeChange:
    """The code change a checkpoint shows (Implement & Review's code review): each
    file's diff, the reviewers' findings by file and line, the checks' result."""
    checkpoint = await _service(request).get_checkpoint(checkpoint_id)
    change = CodeChange.of(checkpoint)
    if change is None:
        raise NotFound(f"checkpoint {checkpoint_id} shows no code change")
    return change


@router.post(
    "/checkpoints/{checkpoint_id}/resolve",
    tags=["checkpoints"],
    responses=error_responses(400, 401, 403, 404, 409, 413, 422, 503),
)
async def resolve_checkpoint(
    request: Request,
    checkpoint_id: str,
    body: Resolve,
    who: Resolver,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Checkpoint:
    """Resolve with one of the checkpoint's actions. 409 (with the existing resolution)
    when it was already resolved; a replay with the winner's ``Idempotency-Key`` (same
    caller, same body) gets the original answer, and that key with anything else is a 422
    ``idempotency_key_reused``."""
    return await _service(request).resolve(
        checkpoint_id, body, actor=who.name, idempotency_key=idempotency_key
    )


class ResolveBatch(Body, Decision):
    """One decision for several checkpoints (each offering its action)."""

    checkpoint_ids: Annotated[list[Text], Field(min_length=1, max_length=MAX_BATCH)]


@router.post(
    "/checkpoints/resolve",
    tags=["checkpoints"],
    responses=error_responses(401, 403, 413, 422),
)
async def resolve_checkpoints(
    request: Request,
    body: ResolveBatch,
    who: Resolver,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> BatchResult:
    """Apply one decision to several checkpoints: each is its own exactly-once
    resolution with its own audit row, and the answer says per item what happened
    (``resolved``, ``already_resolved`` — someone decided first —, ``invalid``,
    ``not_found``); one failing item never undoes or stops the others."""
    decision = Decision.model_validate(body.model_dump(include=set(Decision.model_fields)))
    return await _service(request).resolve_batch(
        body.checkpoint_ids, decision, actor=who.name, idempotency_key=idempotency_key
    )


# -- tokens (admin) ----------------------------------------------------------


# -- the event log ---------------------------------------------------------------


class LastEvent(BaseModel):
    id: int = Field(description="the newest event's id (0: none yet): a cursor for streams")


@router.get("/events/last", tags=["events"], responses=error_responses(401))
async def last_event(request: Request, _: Reader) -> LastEvent:
    """Where the event log is now, so a client can follow only what happens next."""
    return LastEvent(id=await _service(request).last_event_id())


# -- short ids -----------------------------------------------------------------


class FullId(BaseModel):
    id: str


@router.get("/ids/{kind}/{prefix}", tags=["ids"], responses=error_responses(401, 404, 422))
async def expand_id(
    request: Request, kind: Literal["workflow", "checkpoint"], prefix: str, _: Reader
) -> FullId:
    """The full id of the workflow or checkpoint whose id starts with ``prefix`` (4+ hex
    digits); ambiguous: a 422 whose ``details.matches`` lists them."""
    return FullId(id=await _service(request).expand_id(kind, prefix))


# -- worktrees -----------------------------------------------------------------


class PruneWorktrees(Body):
    workspace_path: Text


@router.get("/worktrees", tags=["worktrees"], responses=error_responses(401, 403, 422))
async def list_worktrees(
    request: Request, _: Reader, workspace_path: Annotated[str, Query(max_length=4096)]
) -> list[WorktreeInfo]:
    """Orchestra's worktrees in a repository (within the allowed roots), each with
    the workflow it belongs to."""
    return await _service(request).worktrees(workspace_path)


@router.post("/worktrees/prune", tags=["worktrees"], responses=error_responses(401, 403, 422))
async def prune_worktrees(request: Request, body: PruneWorktrees, _: Admin) -> list[WorktreeInfo]:
    """Remove the worktrees whose workflow ended or is unknown (branches stay);
    the ones left."""
    return await _service(request).worktrees(body.workspace_path, prune=True)


@router.get("/tokens", tags=["tokens"], responses=error_responses(401, 403))
async def list_api_tokens(request: Request, _: Admin) -> list[TokenInfo]:
    return await tokens.list_tokens(runtime_of(request).db)


@router.post("/tokens", status_code=201, tags=["tokens"], responses=error_responses(401, 403, 422))
async def create_api_token(request: Request, body: CreateToken, _: Admin) -> CreatedToken:
    db = runtime_of(request).db
    token = await tokens.create_token(db, name=body.name, role=body.role)
    info = next(t for t in await tokens.list_tokens(db) if t.name == body.name)
    return CreatedToken(token=token, info=info)


@router.delete(
    "/tokens/{name}", status_code=204, tags=["tokens"], responses=error_responses(401, 403, 404)
)
async def revoke_api_token(request: Request, name: str, _: Admin) -> Response:
    await tokens.revoke_token(runtime_of(request).db, name)
    return Response(status_code=204)


# -- notifications (admin) -----------------------------------------------------


@router.get("/notifications", tags=["notifications"], responses=error_responses(401, 403, 422))
async def list_notifications(
    request: Request,
    _: Admin,
    status: NotificationStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=outbox.MAX_LIST, description="how many")] = 100,
) -> list[Notification]:
    """The notification outbox, newest first: each row's target, event and payload,
    how many delivery attempts it had, and what the last one got (``last_error``,
    ``last_status_code``). Admins only: payloads name workflows and targets."""
    return await runtime_of(request).db.read(
        lambda conn: outbox.list_notifications(
            conn, status=status.value if status else None, limit=limit
        )
    )


@router.get(
    "/notifications/{notification_id}",
    tags=["notifications"],
    responses=error_responses(401, 403, 404, 422),
)
async def get_notification(request: Request, notification_id: str, _: Admin) -> NotificationDetail:
    """One notification (by id, or a unique start of it: 4+ hex digits) with every
    delivery attempt: when it started, how long it took, the status code or error."""
    return await notification_admin.notification(runtime_of(request).db, notification_id)


@router.post(
    "/notifications/{notification_id}/requeue",
    tags=["notifications"],
    responses=error_responses(401, 403, 404, 409, 422),
)
async def requeue_notification(request: Request, notification_id: str, who: Admin) -> Notification:
    """A failed notification back to pending, sent again now (its attempts are kept,
    and the next is numbered after them). Delivered or still pending: 409."""
    db = runtime_of(request).db
    return await notification_admin.requeue(db, notification_id, actor=who.name)


class PruneNotifications(Body):
    #: How old a finished notification must be to go: ``30d``, ``12h`` (at least 1h).
    older_than: Annotated[Any, WithJsonSchema({"type": "string", "examples": ["30d"]})]


@router.post(
    "/notifications/prune", tags=["notifications"], responses=error_responses(401, 403, 422)
)
async def prune_notifications(
    request: Request, body: PruneNotifications, who: Admin
) -> NotificationsPruned:
    """Delete delivered and failed notifications created before ``older_than`` ago,
    with their attempts, and decision links that expired before then. Pending ones
    stay whatever their age."""
    db = runtime_of(request).db
    return await notification_admin.prune(db, body.older_than, actor=who.name)
