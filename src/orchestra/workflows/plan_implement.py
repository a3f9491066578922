"""Implement & Review (``plan_implement``): Plan & Review, then an implementer
changes the code in its own git worktree, the workspace's check runs, reviewers
review the diff in parallel, and a person approves the change (a commit on the
workflow's branch, optionally fast-forwarded into the base branch), sends it back
with notes and line comments, or discards it. Nothing is committed without a person.

The steps after the plan, and where each outcome leads::

    implement → check (when configured) → code_review → code_ready_for_review
        approve → confirm_commit → finish (commit [+ merge]) → done
        request_changes / edit_implementer_prompt → implement (iteration + 1)
        discard → discard (worktree and branch removed) → done

Every git operation runs as (or around) a recorded task
(:mod:`orchestra.workflows.implement_work`): the implementer's files are
snapshotted to ``refs/orchestra/<workflow>/<iteration>`` before its run is
recorded, and an attempt cut short starts again from the last snapshot. It may
start from a plan given as text (``options.plan``) or from a completed workflow's
plan (``from_workflow``), skipping planning.
"""

from __future__ import annotations

import dataclasses
import logging
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestra.agents.base import Adapter
from orchestra.domain.code import CheckOutcome, CodeChange, Finding, as_context
from orchestra.domain.errors import InvalidInput, OrchestraError
from orchestra.domain.models import AgentOutput, AgentRun, CheckpointAction, LineComment, Resolution
from orchestra.domain.statuses import ActionStyle, AgentRunStatus, WorkflowStatus
from orchestra.domain.untrusted import Text
from orchestra.engine.definition import (
    CANCEL,
    AgentStep,
    AgentTask,
    CheckpointStep,
    CheckpointView,
    Committed,
    Next,
    Start,
    StepContext,
    Workdir,
    WorkflowDefinition,
)
from orchestra.workflows import git_worktree, plan_review, prompts
from orchestra.workflows.implement_work import (
    CheckRunner,
    DiscardRunner,
    Finish,
    FinishRunner,
    Place,
    capture_implementer,
    prepare_implementer,
    remove,
    reset_to,
)
from orchestra.workflows.plan_review import Action as PlanAction
from orchestra.workflows.plan_review import PlanReviewState, agent_label
from orchestra.workflows.reviews import (
    CODE_REVIEW_SCHEMA,
    consolidate,
    feedback_markdown,
    parse_review,
    reviews_favour_approval,
    verdict_line,
)

log = logging.getLogger(__name__)

# -- the state -------------------------------------------------------------


class PlanImplementState(PlanReviewState):
    """Plan & Review's state, and what the implementation adds."""

    #: Keep the worktree when the workflow ends (it is removed by default).
    keep_worktree: bool = False
    #: The branch the workspace had checked out when the workflow started.
    base_branch: str | None = None
    #: The implementer's iteration (0 while planning) and the ones allowed beyond the limit.
    code_iteration: int = 0
    extra_code_iterations: int = 0
    #: The implementer's next prompt, when not the default (cleared once used).
    implementer_prompt: str | None = None
    implementer_session: str | None = None
    implementer_output: AgentOutput | None = None
    #: The last recorded snapshot and the change it is against the base.
    snapshot: str | None = None
    code: CodeChange | None = None
    check: CheckOutcome | None = None
    code_reviews: tuple[AgentOutput, ...] = ()
    #: What goes back with the next revision, held while the prompt is edited.
    code_feedback: str | None = None
    comments: tuple[LineComment, ...] = ()
    code_notes: str | None = None
    code_notes_by: str | None = None
    #: Notes given with a retry of the code review, for the reviewers run again.
    code_review_notes: str | None = None
    code_review_notes_by: str | None = None
    approved_by: str | None = None
    commit_message: str | None = None
    merge: bool = False


class Options(BaseModel):
    """What a client may give when starting ``plan_implement``."""

    model_config = ConfigDict(extra="forbid")

    #: A plan to implement as it is (planning is skipped).
    plan: Text | None = Field(default=None, min_length=1, max_length=200_000)
    keep_worktree: bool = False


Ctx = StepContext[PlanImplementState]

# -- names -----------------------------------------------------------------

IMPLEMENT = "implement"
CHECK = "check"
CODE_REVIEW = "code_review"
CODE_READY = "code_ready_for_review"
EDIT_IMPLEMENTER_PROMPT = "edit_implementer_prompt"
CONFIRM_COMMIT = "confirm_commit"
FINISH = "finish"
DISCARD = "discard"


class Action(StrEnum):
    APPROVE = "approve"
    REQUEST_CHANGES = "request_changes"
    EDIT_IMPLEMENTER_PROMPT = "edit_implementer_prompt"
    SEND_TO_IMPLEMENTER = "send_to_implementer"
    EXTEND = "extend"
    DISCARD = "discard"
    COMMIT = "commit"
    COMMIT_AND_MERGE = "commit_and_merge"
    BACK = "back"


def _place(ctx: Ctx) -> Place:
    assert ctx.workspace is not None  # the start requires one
    return Place(ctx.workspace, ctx.name, ctx.workflow_id)


def _timeout(ctx: Ctx, entry: dict[str, Any], job_timeout: str, default: float) -> float:
    return float(entry.get("timeout_s") or ctx.agents.get(job_timeout) or default)


# -- from the approved plan to the implementer -----------------------------


def _to_implementer(ctx: Ctx, decision: Resolution | None = None) -> Next:
    """The plan is approved: the implementer's first iteration (the notes given with
    the approval go into its prompt)."""
    prompt = None
    if decision is not None and decision.notes and decision.notes.strip():
        prompt = prompts.with_notes(
            _first_prompt(ctx, ctx.state), decision.notes, decision.resolved_by
        )
    state = ctx.state.replace(code_iteration=1, implementer_prompt=prompt)
    return Next(step=IMPLEMENT, state=state)


def _first_prompt(ctx: Ctx, state: PlanImplementState) -> str:
    """The implementer's prompt for the approved plan."""
    return prompts.implementer_prompt(ctx.prompt, state.plan, _place(ctx).worktree().branch)


def _entry(state: PlanImplementState) -> str:
    return IMPLEMENT if state.code_iteration else plan_review.PLAN


# -- implement: the implementer changes the code in the worktree -----------


def _implement_tasks(ctx: Ctx) -> list[AgentTask]:
    entry = ctx.agents["implementer"]
    options = entry.get("options", {})
    state = ctx.state
    place = _place(ctx)
    session = state.implementer_session if options.get("resume") is True else None
    iteration = state.code_iteration
    return [
        AgentTask(
            key="implementer",
            job="implementer",
            adapter=entry["adapter"],
            options=options,
            prompt=state.implementer_prompt or _first_prompt(ctx, state),
            timeout_s=_timeout(ctx, entry, "implementer_timeout_s", 1800),
            resume_session=session or None,
            workdir=Workdir(
                path=place.worktree().path,
                prepare=lambda: prepare_implementer(place, state.snapshot),
                capture=lambda: capture_implementer(place, iteration),
            ),
        )
    ]


def _implement_done(ctx: Ctx, runs: dict[str, AgentRun]) -> Next:
    run = runs["implementer"]
    if run.status is not AgentRunStatus.COMPLETED:
        return _problem(ctx, IMPLEMENT, runs)
    meta = run.meta or {}
    session = meta.get("session_id")
    state = ctx.state.replace(
        snapshot=meta["snapshot"],
        code=CodeChange.model_validate(meta["code"]),
        check=None,
        code_reviews=(),
        implementer_prompt=None,
        implementer_session=session if isinstance(session, str) and session else None,
        implementer_output=AgentOutput(
            agent=agent_label(ctx, "implementer"),
            job="implementer",
            content=run.output or "",
            agent_run_id=run.id,
        ),
        problem=None,
    )
    return Next(step=CHECK if ctx.agents.get("check") else CODE_REVIEW, state=state)


# -- check: the workspace's check command, in the worktree -----------------


def _check_tasks(ctx: Ctx) -> list[AgentTask]:
    check = ctx.agents["check"]
    place, snapshot = _place(ctx), ctx.state.snapshot
    assert snapshot is not None
    return [
        AgentTask(
            key="check",
            job="check",
            adapter="check",
            options={},
            prompt=" ".join(check["command"]),
            timeout_s=float(check["timeout_s"]),
            workdir=Workdir(place.worktree().path, prepare=lambda: reset_to(place, snapshot)),
            runner=CheckRunner(list(check["command"]), float(check["timeout_s"])),
        )
    ]


def _check_done(ctx: Ctx, runs: dict[str, AgentRun]) -> Next:
    run = runs["check"]
    if run.status is not AgentRunStatus.COMPLETED:
        return _problem(ctx, CHECK, runs)
    outcome = CheckOutcome.model_validate((run.meta or {})["check"])
    return Next(step=CODE_REVIEW, state=ctx.state.replace(check=outcome, problem=None))


# -- code_review: reviewers review the diff, in parallel -------------------


def _diff_text(code: CodeChange) -> str:
    return "".join(f.patch if f.patch else f"(binary file {f.path})\n" for f in code.files)


def _check_text(check: CheckOutcome | None) -> str | None:
    if check is None:
        return None
    failed = check.problem or f"failed, exit code {check.exit_code}"
    verdict = "passed" if check.passed else failed
    return f"`{' '.join(check.command)}` {verdict}.\n\n```\n{check.output_tail[-4000:]}\n```"


def _code_review_tasks(ctx: Ctx) -> list[AgentTask]:
    state = ctx.state
    assert state.code is not None
    prompt = prompts.with_notes(
        prompts.code_reviewer_prompt(
            ctx.prompt, state.plan, _diff_text(state.code), _check_text(state.check)
        ),
        state.code_review_notes,
        state.code_review_notes_by,
    )
    path = _place(ctx).worktree().path
    return [
        AgentTask(
            key=f"code-reviewer-{i}",
            job="code_reviewer",
            adapter=entry["adapter"],
            options=entry.get("options", {}),
            prompt=prompt,
            timeout_s=_timeout(ctx, entry, "reviewer_timeout_s", 300),
            output_schema=CODE_REVIEW_SCHEMA,
            workdir=Workdir(path),
        )
        for i, entry in enumerate(ctx.agents["code_reviewers"], start=1)
    ]


def _review_output(ctx: Ctx, key: str, run: AgentRun) -> AgentOutput:
    return AgentOutput(
        agent=agent_label(ctx, key),
        job="code_reviewer",
        content=run.output or "",
        structured=parse_review(run.output or "", run.structured),
        agent_run_id=run.id,
    )


def _code_review_done(ctx: Ctx, runs: dict[str, AgentRun]) -> Next:
    if any(run.status is AgentRunStatus.FAILED for run in runs.values()):
        return _problem(ctx, CODE_REVIEW, runs)
    reviews = tuple(
        _review_output(ctx, key, run)
        for key, run in sorted(runs.items())
        if run.status is AgentRunStatus.COMPLETED
    )
    state = ctx.state.replace(code_reviews=reviews, code_review_notes=None, problem=None)
    return Next(step=CODE_READY, state=state)


# -- code_ready_for_review: a person decides on the change -----------------


def _findings(reviews: tuple[AgentOutput, ...]) -> list[Finding]:
    found = []
    for out in reviews:
        for issue in (out.structured or {}).get("issues", []):
            found.append(
                Finding(
                    agent=out.agent,
                    severity=issue.get("severity", "medium"),
                    title=issue.get("title", ""),
                    detail=issue.get("detail", ""),
                    file=issue.get("file"),
                    line=issue.get("line"),
                )
            )
    return found


def _change(ctx: Ctx) -> CodeChange:
    code = ctx.state.code
    assert code is not None
    return code.model_copy(
        update={"findings": _findings(ctx.state.code_reviews), "check": ctx.state.check}
    )


def _limit(ctx: Ctx) -> int:
    return ctx.max_iterations + ctx.state.extra_code_iterations


def _code_ready_view(ctx: Ctx) -> CheckpointView:
    state = ctx.state
    change = _change(ctx)
    reviews = list(state.code_reviews)
    at_limit = state.code_iteration >= _limit(ctx)
    files = len(change.files) + change.files_omitted
    check = (
        ""
        if change.check is None
        else (" The check passed." if change.check.passed else " The check FAILED.")
    )
    instructions = (
        f"Iteration {state.code_iteration} of the implementation changed {files} file(s) on "
        f"branch {change.branch}.{check} Read the diff and the reviews; approve it to commit "
        "it, request changes (your notes and line comments go to the implementer), or "
        "discard it."
    )
    if at_limit:
        instructions += (
            f" This was the last of {_limit(ctx)} allowed iterations: approve, discard, or "
            "allow one more."
        )
    hidden = (
        {Action.REQUEST_CHANGES, Action.EDIT_IMPLEMENTER_PROMPT} if at_limit else {Action.EXTEND}
    )
    outputs = ([state.implementer_output] if state.implementer_output else []) + reviews
    consolidation = consolidate(reviews)
    checks_ok = change.check is None or change.check.passed
    if checks_ok and reviews_favour_approval(consolidation):
        recommended = Action.APPROVE
    else:
        recommended = Action.EXTEND if at_limit else Action.REQUEST_CHANGES
    added = sum(f.added for f in change.files)
    removed = sum(f.removed for f in change.files)
    checked = "" if change.check is None else (", checks pass" if checks_ok else ", checks FAIL")
    reviewed = f"; {verdict_line(consolidation)}" if reviews else ""
    return CheckpointView(
        instructions=instructions,
        agent_outputs=outputs,
        editable_content=feedback_markdown(reviews, consolidation) if reviews else "",
        consolidation=consolidation if reviews else None,
        summary=f"Change v{state.code_iteration} ready — {files} file(s) +{added} −{removed}"
        f"{checked}{reviewed}; recommended: {recommended}",
        recommended=recommended,
        context={
            "code": as_context(change),
            "iteration": state.code_iteration,
            "max_iterations": _limit(ctx),
            "plan": state.plan,
        },
        hide_actions=frozenset(hidden),
    )


def _revision(ctx: Ctx, state: PlanImplementState) -> str:
    return prompts.implementer_revision_prompt(
        ctx.prompt,
        state.plan,
        state.code_iteration,
        state.code_feedback or "",
        state.comments,
        state.code_notes,
        state.code_notes_by,
    )


def _next_iteration(ctx: Ctx, state: PlanImplementState, prompt: str) -> Next:
    """The implementer's next iteration (the workflow's iteration moves on too: its
    agent runs are counted per iteration)."""
    state = state.replace(code_iteration=state.code_iteration + 1, implementer_prompt=prompt)
    return Next(step=IMPLEMENT, iteration=ctx.iteration + 1, state=state)


def _code_ready_resolve(ctx: Ctx, decision: Resolution) -> Next:
    state = ctx.state
    if decision.action == Action.APPROVE:
        return Next(step=CONFIRM_COMMIT, state=state.replace(approved_by=decision.resolved_by))
    if decision.action == Action.DISCARD:
        return Next(step=DISCARD)
    if decision.action == Action.EXTEND:
        extra = state.extra_code_iterations + 1
        return Next(step=CODE_READY, state=state.replace(extra_code_iterations=extra))
    state = state.replace(
        code_feedback=decision.edited_content if decision.text is not None else "",
        comments=tuple(decision.comments or ()),
        code_notes=decision.notes,
        code_notes_by=decision.resolved_by,
    )
    if decision.action == Action.EDIT_IMPLEMENTER_PROMPT:
        return Next(step=EDIT_IMPLEMENTER_PROMPT, state=state)
    return _next_iteration(ctx, state, _revision(ctx, state))


# -- edit_implementer_prompt -----------------------------------------------


def _edit_prompt_view(ctx: Ctx) -> CheckpointView:
    return CheckpointView(
        instructions="This is the exact prompt the implementer will receive for the next "
        "iteration. Edit it and send it.",
        editable_content=_revision(ctx, ctx.state),
        context={"iteration": ctx.state.code_iteration},
        summary=f"Implementer's prompt for iteration {ctx.state.code_iteration + 1} — edit "
        "it, then send it",
        recommended=Action.SEND_TO_IMPLEMENTER,
    )


def _edit_prompt_resolve(ctx: Ctx, decision: Resolution) -> Next:
    assert decision.text is not None  # requires_content
    prompt = prompts.with_notes(decision.text, decision.notes, decision.resolved_by)
    return _next_iteration(ctx, ctx.state, prompt)


# -- confirm_commit: the message, and whether to merge ---------------------


def _default_message(ctx: Ctx) -> str:
    title = ctx.name.strip().splitlines()[0][:72]
    return (
        f"{title}\n\n"
        f"{ctx.prompt.strip()[:2000]}\n\n"
        f"Implemented by Orchestra workflow {ctx.workflow_id} (iteration "
        f"{ctx.state.code_iteration}).\n"
        f"Approved-by: {ctx.state.approved_by or 'unknown'}\n"
    )


def _confirm_view(ctx: Ctx) -> CheckpointView:
    change = _change(ctx)
    base = ctx.state.base_branch
    merge = (
        f"“Commit and merge” also fast-forwards {base} when nothing else was committed on it."
        if base
        else "The workspace was on a detached HEAD: there is no base branch to merge into."
    )
    return CheckpointView(
        instructions=(
            f"Edit the commit message. “Commit” makes one commit on {change.branch}. {merge}"
        ),
        editable_content=_default_message(ctx),
        context={"code": as_context(change), "iteration": ctx.state.code_iteration},
        hide_actions=frozenset() if base else frozenset({Action.COMMIT_AND_MERGE}),
        summary=f"Commit the approved change on {change.branch} — confirm the message; "
        "recommended: commit",
        recommended=Action.COMMIT,
    )


def _confirm_resolve(ctx: Ctx, decision: Resolution) -> Next:
    if decision.action == Action.BACK:
        return Next(step=CODE_READY)
    message = decision.text or _default_message(ctx)
    merge = decision.action == Action.COMMIT_AND_MERGE
    return Next(step=FINISH, state=ctx.state.replace(commit_message=message, merge=merge))


# -- finish and discard: git does what the person decided ------------------


def _finish_tasks(ctx: Ctx) -> list[AgentTask]:
    state = ctx.state
    assert state.code is not None and state.snapshot is not None
    finish = Finish(
        place=_place(ctx),
        base=state.code.base,
        snapshot=state.snapshot,
        message=state.commit_message or _default_message(ctx),
        merge_into=state.base_branch if state.merge else None,
        keep_worktree=state.keep_worktree,
    )
    what = f"commit {state.snapshot[:12]} on {state.code.branch}"
    if finish.merge_into:
        what += f", fast-forward {finish.merge_into}"
    return [_git_task(what, FinishRunner(finish))]


def _git_task(what: str, runner: Adapter) -> AgentTask:
    """A task of the definition's own git work, recorded as a run named ``git``."""
    return AgentTask(
        key="git", job="git", adapter="git", options={}, prompt=what, timeout_s=120, runner=runner
    )


def _finish_done(ctx: Ctx, runs: dict[str, AgentRun]) -> Next:
    run = runs["git"]
    if run.status is not AgentRunStatus.COMPLETED:
        return _problem(ctx, FINISH, runs)
    meta = run.meta or {}
    return Next(
        step=None,
        result={
            "plan": ctx.state.plan,
            "commit": meta.get("commit"),
            "branch": meta.get("branch"),
            "merged": bool(meta.get("merged")),
            "merge_note": meta.get("merge_note"),
            "iterations": ctx.state.code_iteration,
        },
    )


def _discard_tasks(ctx: Ctx) -> list[AgentTask]:
    return [_git_task("discard the worktree and its branch", DiscardRunner(_place(ctx)))]


def _discard_done(ctx: Ctx, runs: dict[str, AgentRun]) -> Next:
    if runs["git"].status is not AgentRunStatus.COMPLETED:
        return _problem(ctx, DISCARD, runs)
    return Next(step=None, result={"plan": ctx.state.plan, "discarded": True})


# -- agent_problem: Plan & Review's, for these steps too -------------------


def _problem(ctx: Ctx, step: str, runs: dict[str, AgentRun]) -> Next:
    return plan_review._problem(ctx, step, runs, {})  # type: ignore[arg-type]


#: Steps where the failed agents may be skipped (their part is optional).
_SKIPPABLE = {plan_review.REVIEW, CODE_REVIEW, CHECK}
#: Steps where a person may write the failed agent's part.
_MANUAL = {plan_review.PLAN, plan_review.REVIEW, CODE_REVIEW}


def _problem_view(ctx: Ctx) -> CheckpointView:
    view = plan_review._problem_view(ctx)  # type: ignore[arg-type]
    problem = ctx.state.problem
    assert problem is not None
    hidden = set()
    if problem.step not in _SKIPPABLE or (problem.step != CHECK and not problem.succeeded):
        hidden.add(PlanAction.SKIP_AGENT)
    if problem.step not in _MANUAL:
        hidden.add(PlanAction.MANUAL_INPUT)
    return dataclasses.replace(view, hide_actions=frozenset(hidden))


def _retry_notes(ctx: Ctx, step: str, decision: Resolution) -> PlanImplementState:
    """The state after a retry with notes: they reach the agents run again."""
    state = ctx.state.replace(problem=None)
    notes, by = decision.notes, decision.resolved_by
    if step == IMPLEMENT:
        prompt = state.implementer_prompt or _first_prompt(ctx, state)
        return state.replace(implementer_prompt=prompts.with_notes(prompt, notes, by))
    if step == CODE_REVIEW:
        return state.replace(code_review_notes=notes, code_review_notes_by=by)
    return plan_review._retry_prompts(ctx, step, decision).replace(problem=None)  # type: ignore[arg-type,return-value]


def _problem_resolve(ctx: Ctx, decision: Resolution) -> Next:
    problem = ctx.state.problem
    assert problem is not None
    planning = problem.step in (plan_review.PLAN, plan_review.REVIEW)
    if decision.action == PlanAction.RETRY or planning:
        nxt = plan_review._problem_resolve(ctx, decision)  # type: ignore[arg-type]
        if decision.action == PlanAction.RETRY and decision.notes and decision.notes.strip():
            return dataclasses.replace(nxt, state=_retry_notes(ctx, problem.step, decision))
        return nxt
    if problem.step == CHECK:  # skip: review without the check
        state = ctx.state.replace(check=None, problem=None)
        return Next(step=CODE_REVIEW, skip_failed=CHECK, state=state)
    reviews = plan_review.with_manual_review(problem, decision, "code_reviewer")
    state = ctx.state.replace(code_reviews=reviews, problem=None)
    return Next(step=CODE_READY, skip_failed=CODE_REVIEW, state=state)


# -- starting, and cleaning up ---------------------------------------------


def _start(start: Start) -> PlanImplementState:
    """Refuse a start that cannot reach a worktree, before anything is written."""
    plan_review._initial_state(start.agents)
    for job in ("implementer",):
        if not isinstance(start.agents.get(job), dict):
            raise InvalidInput(f"agents.{job} is required", details={"field": f"agents.{job}"})
    if start.workspace is None:
        raise InvalidInput(
            "plan_implement needs a workspace_path: the git repository to change",
            details={"field": "workspace_path"},
        )
    git_worktree.check_repository(start.workspace)
    options = start.options if isinstance(start.options, Options) else Options()
    plan = options.plan or (start.previous_result or {}).get("plan")
    state = PlanImplementState(
        keep_worktree=options.keep_worktree,
        base_branch=git_worktree.base_branch(start.workspace),
    )
    if isinstance(plan, str) and plan.strip():  # implement it as it is: no planning
        state = state.replace(plan=plan, plans={"1": plan}, code_iteration=1)
    elif start.previous_result is not None:
        raise InvalidInput(
            "that workflow's result has no plan to implement", details={"field": "from_workflow"}
        )
    return state


def _after_commit(done: Committed[PlanImplementState]) -> None:
    """Plans to disk as Plan & Review writes them; a cancelled workflow's worktree
    and branch removed (unless kept)."""
    plan_review._write_plans(done)  # type: ignore[arg-type]
    ctx = done.ctx
    if done.status is WorkflowStatus.CANCELLED and not ctx.state.keep_worktree:
        try:
            remove(_place(ctx), keep_branch=False)
        except OrchestraError:
            log.exception("workflow %s: could not remove its worktree", ctx.workflow_id)


def _action(
    name: str,
    label: str,
    style: ActionStyle = ActionStyle.SECONDARY,
    **extra: Any,
) -> CheckpointAction:
    return CheckpointAction(name=name, label=label, style=style, **extra)


#: Plan & Review's ``agent_problem`` checkpoint, whose actions this one offers too.
_PLAN_PROBLEM = plan_review.plan_steps()[plan_review.AGENT_PROBLEM]
assert isinstance(_PLAN_PROBLEM, CheckpointStep)

definition = WorkflowDefinition(
    type="plan_implement",
    title="Implement & Review",
    state=PlanImplementState,
    first_step=plan_review.PLAN,
    entry=_entry,
    options=Options,
    start=_start,
    agent_jobs=("planner", "reviewers", "implementer", "code_reviewers"),
    after_commit=_after_commit,
    steps={
        **plan_review.plan_steps(_to_implementer, approve_label="Approve plan → implementer"),  # type: ignore[arg-type]
        plan_review.AGENT_PROBLEM: CheckpointStep(
            plan_review.AGENT_PROBLEM,
            _PLAN_PROBLEM.title,
            _PLAN_PROBLEM.actions,
            _problem_view,
            _problem_resolve,
            editable_label=_PLAN_PROBLEM.editable_label,
        ),
        IMPLEMENT: AgentStep(IMPLEMENT, _implement_tasks, _implement_done),
        CHECK: AgentStep(CHECK, _check_tasks, _check_done),
        CODE_REVIEW: AgentStep(CODE_REVIEW, _code_review_tasks, _code_review_done),
        CODE_READY: CheckpointStep(
            CODE_READY,
            "Code ready for review",
            [
                _action(
                    Action.APPROVE,
                    "Approve → commit",
                    ActionStyle.PRIMARY,
                    description="Commit the change on its branch (you confirm the message next).",
                ),
                _action(
                    Action.REQUEST_CHANGES,
                    "Request changes → implementer",
                    takes_comments=True,
                    description="The feedback as edited, your notes and line comments go to "
                    "the implementer for another iteration in the same worktree.",
                ),
                _action(
                    Action.EDIT_IMPLEMENTER_PROMPT,
                    "Edit implementer prompt first",
                    takes_comments=True,
                ),
                _action(Action.EXTEND, "Allow one more iteration"),
                _action(
                    Action.DISCARD,
                    "Discard the change",
                    ActionStyle.DANGER,
                    destructive=True,
                    description="Remove the worktree and its branch; nothing is committed.",
                ),
                CANCEL,
            ],
            _code_ready_view,
            _code_ready_resolve,
            editable_label="Feedback for the implementer",
        ),
        EDIT_IMPLEMENTER_PROMPT: CheckpointStep(
            EDIT_IMPLEMENTER_PROMPT,
            "Edit the implementer's prompt",
            [
                _action(
                    Action.SEND_TO_IMPLEMENTER,
                    "Send to implementer",
                    ActionStyle.PRIMARY,
                    requires_content=True,
                ),
                CANCEL,
            ],
            _edit_prompt_view,
            _edit_prompt_resolve,
            editable_label="Implementer prompt",
        ),
        CONFIRM_COMMIT: CheckpointStep(
            CONFIRM_COMMIT,
            "Confirm the commit",
            [
                _action(Action.COMMIT, "Commit", ActionStyle.PRIMARY),
                _action(Action.COMMIT_AND_MERGE, "Commit and merge (fast-forward)"),
                _action(Action.BACK, "Back to the review"),
                CANCEL,
            ],
            _confirm_view,
            _confirm_resolve,
            editable_label="Commit message",
        ),
        FINISH: AgentStep(FINISH, _finish_tasks, _finish_done),
        DISCARD: AgentStep(DISCARD, _discard_tasks, _discard_done),
    },
)
