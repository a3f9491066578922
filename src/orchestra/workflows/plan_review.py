"""Plan & Review: a planner writes a plan, a person reviews it, reviewers review it
in parallel, the person consolidates their reviews, and the plan is approved or
revised in another iteration.

This is a workflow *definition*, and the one to copy: a typed state
(:class:`PlanReviewState`), names for steps and actions, then one section per
step — what it runs or shows, and where each outcome leads (:class:`Next`). The
engine calls these pure functions and owns the rest (persistence, retries of
failed agents, the ``cancel`` action).

With a workspace, the plans also go to disk (:mod:`orchestra.workflows.plan_files`)
from the ``after_commit`` hook, outside any transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum
from functools import partial
from typing import Any

from pydantic import BaseModel, ConfigDict

from orchestra.agents.config import DEFAULT_MAX_AGENT_TIMEOUT_S
from orchestra.domain.errors import InvalidInput
from orchestra.domain.models import (
    ActionInput,
    AgentOutput,
    AgentRun,
    CheckpointAction,
    Resolution,
)
from orchestra.domain.statuses import ActionStyle, AgentRunStatus, WorkflowStatus
from orchestra.engine.definition import (
    CANCEL,
    AgentStep,
    AgentTask,
    CheckpointStep,
    CheckpointView,
    Committed,
    Next,
    StepContext,
    WorkflowDefinition,
    WorkflowState,
)
from orchestra.workflows import prompts
from orchestra.workflows.plan_files import FINAL, sync_plan
from orchestra.workflows.reviews import (
    REVIEW_SCHEMA,
    consolidate,
    feedback_markdown,
    parse_review,
    reviews_favour_approval,
    verdict_line,
)

log = logging.getLogger(__name__)

# -- the state -------------------------------------------------------------


class Failure(BaseModel):
    """One agent that failed, as the ``agent_problem`` checkpoint shows it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent: str  # the task key, e.g. "reviewer-2"
    label: str
    error: str
    stderr_tail: str
    agent_run_id: str
    timeout_s: float | None = None


class Problem(BaseModel):
    """A step whose agents failed, kept while ``agent_problem`` waits for a person."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    step: str
    failures: tuple[Failure, ...]
    #: What the step's other agents produced (kept when the failed ones are skipped).
    succeeded: tuple[AgentOutput, ...] = ()


class PlanReviewState(WorkflowState):
    """Everything Plan & Review remembers between steps (the row's ``state`` JSON)."""

    #: The current plan, and every iteration's plan by iteration (``{"1": …}``).
    plan: str = ""
    plans: dict[str, str] = {}
    #: The planner's run that produced the current plan (or the person's text).
    plan_output: AgentOutput | None = None
    #: The planner's session, continued when it is configured with ``resume = true``.
    planner_session: str | None = None
    #: The prompt for the next run, when not the default (one run only; cleared once used).
    planner_prompt: str | None = None
    reviewer_prompt: str | None = None
    #: The revision prompt held while ``iteration_limit_reached`` waits.
    pending_planner_prompt: str | None = None
    #: Iterations a person allowed beyond ``max_iterations``.
    extra_iterations: int = 0
    #: This iteration's reviews.
    reviews: tuple[AgentOutput, ...] = ()
    #: What goes back to the planner: the feedback as edited, and the person's notes.
    feedback: str | None = None
    notes: str | None = None
    notes_by: str | None = None
    #: Notes a person gave when sending the plan to the reviewers (for their prompt).
    reviewer_notes: str | None = None
    reviewer_notes_by: str | None = None
    problem: Problem | None = None


#: What every function below is given.
Ctx = StepContext[PlanReviewState]

# -- names -----------------------------------------------------------------

PLAN = "plan"
REVIEW = "review"
PLAN_READY = "plan_ready_for_review"
EDIT_REVIEWER_PROMPT = "edit_reviewer_prompt"
REVIEWS_READY = "reviews_ready_for_consolidation"
EDIT_PLANNER_PROMPT = "edit_planner_prompt"
ITERATION_LIMIT = "iteration_limit_reached"
AGENT_PROBLEM = "agent_problem"


class Action(StrEnum):
    """The actions the checkpoints offer (``cancel`` is the engine's: :data:`CANCEL`)."""

    APPROVE = "approve"
    EDIT_REVIEWER_PROMPT = "edit_reviewer_prompt"
    SEND_TO_REVIEWERS = "send_to_reviewers"
    REVISE = "revise"
    EDIT_PLANNER_PROMPT = "edit_planner_prompt"
    SEND_TO_PLANNER = "send_to_planner"
    EXTEND = "extend"
    RETRY = "retry"
    SKIP_AGENT = "skip_agent"
    MANUAL_INPUT = "manual_input"


def _action(
    name: Action,
    label: str,
    style: ActionStyle = ActionStyle.SECONDARY,
    *,
    requires_content: bool = False,
    description: str = "",
) -> CheckpointAction:
    return CheckpointAction(
        name=name,
        label=label,
        style=style,
        requires_content=requires_content,
        description=description,
    )


# -- helpers ---------------------------------------------------------------


def _default_reviewer_prompt(ctx: Ctx) -> str:
    state = ctx.state
    return prompts.with_notes(
        prompts.reviewer_prompt(ctx.prompt, state.plan, ctx.iteration),
        state.reviewer_notes,
        state.reviewer_notes_by,
    )


def _default_feedback(ctx: Ctx) -> str:
    outputs = list(ctx.state.reviews)
    return feedback_markdown(outputs, consolidate(outputs))


def _revision_prompt(ctx: Ctx, feedback: str, notes: str | None, by: str | None) -> str:
    return prompts.revision_prompt(ctx.prompt, ctx.state.plan, ctx.iteration, feedback, notes, by)


def _to_planner(ctx: Ctx, state: PlanReviewState, prompt: str) -> Next:
    """Send ``prompt`` to the planner for the next iteration, or, at the iteration
    limit, hold it while a person decides whether to allow one more."""
    if ctx.iteration >= ctx.max_iterations + state.extra_iterations:
        return Next(step=ITERATION_LIMIT, state=state.replace(pending_planner_prompt=prompt))
    return Next(
        step=PLAN,
        iteration=ctx.iteration + 1,
        state=state.replace(planner_prompt=prompt, pending_planner_prompt=None),
    )


def _complete(ctx: Ctx, decision: Resolution | None = None) -> Next:
    """The plan is approved: the workflow completes with it (the notes given with the
    approval are recorded with the decision; no agent acts after it)."""
    state = ctx.state
    return Next(
        step=None, result={"plan": state.plan, "iterations": ctx.iteration, "plans": state.plans}
    )


#: Where an approved plan goes: given the workflow and the approving decision.
Approved = Callable[[Ctx, Resolution], Next]


def _with_plan(state: PlanReviewState, ctx: Ctx, plan: str) -> PlanReviewState:
    """``state`` with ``plan`` as this iteration's plan."""
    return state.replace(plan=plan, plans={**state.plans, str(ctx.iteration): plan})


def _output_of(run: AgentRun, agent_name: str) -> AgentOutput:
    structured = parse_review(run.output or "", run.structured) if run.job == "reviewer" else None
    return AgentOutput(
        agent=agent_name,
        job=run.job,
        content=run.output or "",
        structured=structured,
        agent_run_id=run.id,
    )


#: Task keys ``<prefix>-<n>`` of agents listed in the agents entry, by prefix.
_LISTED = {"reviewer": "reviewers", "code-reviewer": "code_reviewers"}


def agent_label(ctx: StepContext[Any], key: str) -> str:
    """``key (agent name)`` for a task key; the key alone for a definition's own work."""
    entry = ctx.agents.get(key) if key in ("planner", "implementer") else None
    prefix, _, n = key.rpartition("-")
    listed = ctx.agents.get(_LISTED.get(prefix, ""))
    if entry is None and isinstance(listed, list) and n.isdigit() and 0 < int(n) <= len(listed):
        entry = listed[int(n) - 1]
    return f"{key} ({entry['name']})" if isinstance(entry, dict) else key


_agent_label = agent_label


def _timeout(ctx: Ctx, entry: dict[str, Any], job: str) -> float:
    return float(
        entry.get("timeout_s")
        or ctx.agents.get(f"{job}_timeout_s")
        or (600 if job == "planner" else 300)
    )


def _max_timeout(ctx: Ctx) -> float:
    """The operator's cap on agent timeouts, as the workflow recorded it at creation."""
    return float(ctx.agents.get("max_timeout_s") or DEFAULT_MAX_AGENT_TIMEOUT_S)


def _problem(ctx: Ctx, step: str, runs: dict[str, AgentRun], timeouts: dict[str, float]) -> Next:
    """An agent step failed: show a person what failed and what succeeded."""
    failures = tuple(
        Failure(
            agent=key,
            label=_agent_label(ctx, key),
            error=run.error or "no error recorded",
            stderr_tail=run.stderr_tail or "",
            agent_run_id=run.id,
            timeout_s=timeouts.get(key),
        )
        for key, run in sorted(runs.items())
        if run.status is AgentRunStatus.FAILED
    )
    succeeded = tuple(
        _output_of(run, _agent_label(ctx, key))
        for key, run in sorted(runs.items())
        if run.status is AgentRunStatus.COMPLETED
    )
    problem = Problem(step=step, failures=failures, succeeded=succeeded)
    return Next(step=AGENT_PROBLEM, state=ctx.state.replace(problem=problem))


# -- plan: the planner writes (or revises) the plan -----------------------


def _plan_tasks(ctx: Ctx) -> list[AgentTask]:
    entry = ctx.agents["planner"]
    options = entry.get("options", {})
    # A planner configured with ``resume = true`` continues its own session.
    session = ctx.state.planner_session if options.get("resume") is True else None
    return [
        AgentTask(
            key="planner",
            job="planner",
            adapter=entry["adapter"],
            options=options,
            prompt=ctx.state.planner_prompt or prompts.planner_prompt(ctx.prompt),
            timeout_s=_timeout(ctx, entry, "planner"),
            resume_session=session or None,
        )
    ]


def _plan_done(ctx: Ctx, runs: dict[str, AgentRun]) -> Next:
    run = runs["planner"]
    if run.status is not AgentRunStatus.COMPLETED:
        timeout = _timeout(ctx, ctx.agents["planner"], "planner")
        return _problem(ctx, PLAN, runs, {"planner": timeout})
    session = (run.meta or {}).get("session_id")
    state = _with_plan(ctx.state, ctx, run.output or "").replace(
        planner_prompt=None,
        problem=None,
        plan_output=_output_of(run, _agent_label(ctx, "planner")),
        planner_session=session if isinstance(session, str) and session else None,
    )
    return Next(step=PLAN_READY, state=state)


# -- review: every reviewer reviews the plan, in parallel ------------------


def _review_tasks(ctx: Ctx) -> list[AgentTask]:
    prompt = ctx.state.reviewer_prompt or _default_reviewer_prompt(ctx)
    return [
        AgentTask(
            key=f"reviewer-{i}",
            job="reviewer",
            adapter=entry["adapter"],
            options=entry.get("options", {}),
            prompt=prompt,
            timeout_s=_timeout(ctx, entry, "reviewer"),
            output_schema=REVIEW_SCHEMA,
        )
        for i, entry in enumerate(ctx.agents["reviewers"], start=1)
    ]


def _review_done(ctx: Ctx, runs: dict[str, AgentRun]) -> Next:
    if any(run.status is AgentRunStatus.FAILED for run in runs.values()):
        timeouts = {t.key: t.timeout_s for t in _review_tasks(ctx)}
        return _problem(ctx, REVIEW, runs, timeouts)
    reviews = tuple(
        _output_of(run, _agent_label(ctx, key))
        for key, run in sorted(runs.items())
        if run.status is AgentRunStatus.COMPLETED
    )
    state = ctx.state.replace(
        reviews=reviews, reviewer_prompt=None, reviewer_notes=None, problem=None
    )
    return Next(step=REVIEWS_READY, state=state)


# -- plan_ready_for_review: a person reads (and may edit) the plan ---------


def _plan_ready_view(ctx: Ctx) -> CheckpointView:
    output = ctx.state.plan_output
    return CheckpointView(
        instructions=(
            f"Read the plan (version {ctx.iteration}). Edit it if needed, then approve it to "
            "send it to the reviewers, or edit the reviewers' prompt first."
        ),
        agent_outputs=[output] if output else [],
        editable_content=ctx.state.plan,
        context={"iteration": ctx.iteration, "plan_versions": sorted(ctx.state.plans, key=int)},
        summary=f"Plan v{ctx.iteration} ready — read it, edit it if needed, and send it to "
        "the reviewers; recommended: approve",
        recommended=Action.APPROVE,
    )


def _plan_ready_resolve(ctx: Ctx, decision: Resolution) -> Next:
    state = ctx.state
    if decision.text is not None and decision.text != state.plan:  # the person edited it
        state = _with_plan(state, ctx, decision.text)
    state = state.replace(reviewer_notes=decision.notes, reviewer_notes_by=decision.resolved_by)
    if decision.action == Action.EDIT_REVIEWER_PROMPT:
        return Next(step=EDIT_REVIEWER_PROMPT, state=state)
    return Next(step=REVIEW, state=state)


# -- edit_reviewer_prompt: a person edits what every reviewer receives -----


def _edit_reviewer_prompt_view(ctx: Ctx) -> CheckpointView:
    return CheckpointView(
        instructions="This is the exact prompt every reviewer will receive for this "
        "iteration. Edit it and send it to the reviewers.",
        editable_content=_default_reviewer_prompt(ctx),
        context={"iteration": ctx.iteration},
        summary=f"Reviewers' prompt for plan v{ctx.iteration} — edit it, then send it",
        recommended=Action.SEND_TO_REVIEWERS,
    )


def _edit_reviewer_prompt_resolve(ctx: Ctx, decision: Resolution) -> Next:
    prompt = prompts.with_notes(decision.text or "", decision.notes, decision.resolved_by)
    return Next(step=REVIEW, state=ctx.state.replace(reviewer_prompt=prompt))


# -- reviews_ready_for_consolidation: approve, or send feedback back -------


def _reviews_ready_view(ctx: Ctx) -> CheckpointView:
    outputs = list(ctx.state.reviews)
    consolidation = consolidate(outputs)
    favoured = reviews_favour_approval(consolidation)
    recommended = Action.APPROVE if favoured else Action.REVISE
    return CheckpointView(
        instructions=(
            "Read the reviews. Approve the plan to finish, or edit the consolidated "
            "feedback (and add notes) and send it back to the planner for a revision."
        ),
        agent_outputs=outputs,
        editable_content=feedback_markdown(outputs, consolidation),
        consolidation=consolidation,
        summary=f"Plan v{ctx.iteration} reviewed — {verdict_line(consolidation)}; "
        f"recommended: {recommended}",
        recommended=recommended,
        context={
            "iteration": ctx.iteration,
            "plan": ctx.state.plan,
            "max_iterations": ctx.max_iterations,
        },
    )


def _reviews_ready_resolve(ctx: Ctx, decision: Resolution, approved: Approved = _complete) -> Next:
    if decision.action == Action.APPROVE:
        return approved(ctx, decision)
    feedback = decision.text or _default_feedback(ctx)
    state = ctx.state.replace(
        feedback=feedback, notes=decision.notes, notes_by=decision.resolved_by
    )
    if decision.action == Action.EDIT_PLANNER_PROMPT:
        return Next(step=EDIT_PLANNER_PROMPT, state=state)
    prompt = _revision_prompt(ctx, feedback, decision.notes, decision.resolved_by)
    return _to_planner(ctx, state, prompt)


# -- edit_planner_prompt: a person edits the planner's revision prompt -----


def _edit_planner_prompt_view(ctx: Ctx) -> CheckpointView:
    state = ctx.state
    feedback = state.feedback or _default_feedback(ctx)
    return CheckpointView(
        instructions="This is the exact prompt the planner will receive for the next "
        "iteration. Edit it and send it to the planner.",
        editable_content=_revision_prompt(ctx, feedback, state.notes, state.notes_by),
        context={"iteration": ctx.iteration},
        summary=f"Planner's prompt for plan v{ctx.iteration + 1} — edit it, then send it",
        recommended=Action.SEND_TO_PLANNER,
    )


def _edit_planner_prompt_resolve(ctx: Ctx, decision: Resolution) -> Next:
    assert decision.text is not None  # requires_content
    prompt = prompts.with_notes(decision.text, decision.notes, decision.resolved_by)
    return _to_planner(ctx, ctx.state, prompt)


# -- iteration_limit_reached: approve as is, or allow one more -------------


def _limit_view(ctx: Ctx) -> CheckpointView:
    return CheckpointView(
        instructions=(
            f"The plan has been through {ctx.iteration} of {ctx.max_iterations} allowed "
            "iterations. Approve the current plan, allow one more iteration, or cancel."
        ),
        editable_content=ctx.state.plan,
        context={"iteration": ctx.iteration, "max_iterations": ctx.max_iterations},
        summary=f"Plan v{ctx.iteration} reached the limit of {ctx.max_iterations} "
        "iterations — approve it or allow one more; recommended: approve",
        recommended=Action.APPROVE,
    )


def _limit_resolve(ctx: Ctx, decision: Resolution, approved: Approved = _complete) -> Next:
    if decision.action == Action.APPROVE:
        return approved(ctx, decision)
    pending = ctx.state.pending_planner_prompt
    state = ctx.state.replace(
        extra_iterations=ctx.state.extra_iterations + 1,
        planner_prompt=prompts.with_notes(pending, decision.notes, decision.resolved_by)
        if pending
        else None,
        pending_planner_prompt=None,
    )
    return Next(step=PLAN, iteration=ctx.iteration + 1, state=state)


# -- agent_problem: retry the failed agents, skip them, or write their part -


#: A retry may give the failed agents a longer timeout (seconds, for that retry); each
#: checkpoint caps it at the workflow's maximum agent timeout (``_max_timeout``).
RETRY_TIMEOUT = ActionInput(
    name="timeout_s",
    label="Timeout (seconds)",
    minimum=1,
    maximum=86_400,
    help="For this retry only; left empty, a timed-out agent gets twice its last timeout "
    "(up to the configured maximum).",
)

#: The job whose agents run in a step, as agent outputs name it elsewhere.
_JOB_OF_STEP = {PLAN: "planner", REVIEW: "reviewer"}


def _problem_view(ctx: Ctx) -> CheckpointView:
    problem = ctx.state.problem
    assert problem is not None  # set by _problem on the way here
    failures = problem.failures
    outputs = [
        AgentOutput(
            agent=f.label,
            job=_JOB_OF_STEP.get(problem.step, problem.step),
            content=f.stderr_tail,
            agent_run_id=f.agent_run_id,
            status=AgentRunStatus.FAILED,
            error=f.error,
        )
        for f in failures
    ]
    outputs += problem.succeeded
    # Skipping the failed agents leaves something to go on only for reviewers.
    can_skip = problem.step == REVIEW and bool(problem.succeeded)
    names = ", ".join(f.label for f in failures)
    return CheckpointView(
        instructions=(
            f"{names} failed: " + "; ".join(f.error for f in failures) + ". Retry the "
            "failed agents (optionally with a longer timeout; after a timeout the retry "
            "doubles it), skip them, or write their answer yourself."
        ),
        agent_outputs=outputs,
        editable_content="",
        context={
            "failed_step": problem.step,
            "failures": [f.model_dump(mode="json") for f in failures],
        },
        hide_actions=frozenset() if can_skip else frozenset({Action.SKIP_AGENT}),
        input_maximum={RETRY_TIMEOUT.name: _max_timeout(ctx)},
        summary=f"{names} failed ({failures[0].error.split(':', 1)[0]}) — retry, skip or "
        "write their part; recommended: retry",
        recommended=Action.RETRY,
    )


def _retry_prompts(ctx: Ctx, step: str, decision: Resolution) -> PlanReviewState:
    """The state whose prompts carry the notes given with a retry, so the agents run
    again read them (prompts unchanged without notes)."""
    state = ctx.state
    if not decision.notes or not decision.notes.strip():
        return state
    by = decision.resolved_by
    if step == PLAN:
        prompt = state.planner_prompt or prompts.planner_prompt(ctx.prompt)
        return state.replace(planner_prompt=prompts.with_notes(prompt, decision.notes, by))
    if step == REVIEW:
        prompt = state.reviewer_prompt or _default_reviewer_prompt(ctx)
        return state.replace(reviewer_prompt=prompts.with_notes(prompt, decision.notes, by))
    return state


def _problem_resolve(ctx: Ctx, decision: Resolution) -> Next:
    problem = ctx.state.problem
    assert problem is not None
    if decision.action == Action.RETRY:
        # The engine reruns these agents; a timed-out one gets twice its timeout.
        chosen = (decision.inputs or {}).get(RETRY_TIMEOUT.name)
        retry: dict[str, float | None] = {}
        for f in problem.failures:
            longer = chosen
            if longer is None and f.error.startswith("timeout") and f.timeout_s:
                longer = min(2 * f.timeout_s, _max_timeout(ctx))
            retry[f.agent] = longer
        state = _retry_prompts(ctx, problem.step, decision).replace(problem=None)
        return Next(step=problem.step, state=state, retry=retry)
    if problem.step == PLAN:  # manual_input: the person's text is the plan
        assert decision.text is not None
        output = AgentOutput(
            agent=decision.resolved_by, job="planner (manual)", content=decision.text
        )
        state = _with_plan(ctx.state, ctx, decision.text).replace(
            planner_prompt=None, problem=None, plan_output=output
        )
        return Next(step=PLAN_READY, state=state)
    reviews = with_manual_review(problem, decision, "reviewer")
    state = ctx.state.replace(reviews=reviews, reviewer_prompt=None, problem=None)
    return Next(step=REVIEWS_READY, skip_failed=REVIEW, state=state)


def with_manual_review(problem: Problem, decision: Resolution, job: str) -> tuple[AgentOutput, ...]:
    """The reviews that succeeded, and the person's own when they wrote one."""
    if decision.action != Action.MANUAL_INPUT:
        return problem.succeeded
    assert decision.text is not None  # requires_content
    manual = AgentOutput(
        agent=f"{decision.resolved_by} (manual review)",
        job=job,
        content=decision.text,
        structured=parse_review(decision.text),
    )
    return (*problem.succeeded, manual)


# -- plans on disk ---------------------------------------------------------


def _write_plans(done: Committed[PlanReviewState]) -> None:
    """Keep the workspace's plan files in step with the committed state: the current
    iteration's plan (as produced, or as a person edited it) and, once the workflow
    completed, the final plan. Idempotent: unchanged files are not rewritten."""
    ctx = done.ctx
    if ctx.workspace is None:
        return
    wanted: list[tuple[int | str, str]] = []
    plan = ctx.state.plans.get(str(ctx.iteration))
    if plan is not None:
        wanted.append((ctx.iteration, plan))
    final = (done.result or {}).get("plan")
    if done.status is WorkflowStatus.COMPLETED and isinstance(final, str):
        wanted.append((FINAL, final))
    for version, text in wanted:
        path = sync_plan(ctx.workspace, ctx.workflow_id, ctx.name, version, text)
        if path is not None:
            log.info("workflow %s: plan %s written to %s", ctx.workflow_id, version, path)


# -- the definition --------------------------------------------------------


def _initial_state(agents: dict[str, Any]) -> PlanReviewState:
    """Refuse an agents entry without a planner or reviewers before anything runs."""
    if not isinstance(agents.get("planner"), dict):
        raise InvalidInput("agents.planner is required", details={"field": "agents.planner"})
    reviewers = agents.get("reviewers")
    if not isinstance(reviewers, list) or not reviewers:
        raise InvalidInput(
            "agents.reviewers needs at least one reviewer", details={"field": "agents.reviewers"}
        )
    if len(reviewers) > 10:
        raise InvalidInput("at most 10 reviewers", details={"field": "agents.reviewers"})
    return PlanReviewState()


def plan_steps(
    approved: Approved = _complete, *, approve_label: str = "Approve plan (finish)"
) -> dict[str, AgentStep[Any] | CheckpointStep[Any]]:
    """Plan & Review's steps; ``approved`` says where an approved plan goes (by
    default the workflow completes with it), for a workflow that continues it."""
    return {
        PLAN: AgentStep(PLAN, _plan_tasks, _plan_done),
        REVIEW: AgentStep(REVIEW, _review_tasks, _review_done),
        PLAN_READY: CheckpointStep(
            PLAN_READY,
            "Plan ready for review",
            [
                _action(
                    Action.APPROVE,
                    "Approve plan → reviewers",
                    ActionStyle.PRIMARY,
                    description="Send the plan (as edited) to every reviewer.",
                ),
                _action(Action.EDIT_REVIEWER_PROMPT, "Edit reviewer prompt first"),
                CANCEL,
            ],
            _plan_ready_view,
            _plan_ready_resolve,
            editable_label="Plan",
        ),
        EDIT_REVIEWER_PROMPT: CheckpointStep(
            EDIT_REVIEWER_PROMPT,
            "Edit the reviewers' prompt",
            [
                _action(
                    Action.SEND_TO_REVIEWERS,
                    "Send to reviewers",
                    ActionStyle.PRIMARY,
                    requires_content=True,
                ),
                CANCEL,
            ],
            _edit_reviewer_prompt_view,
            _edit_reviewer_prompt_resolve,
            editable_label="Reviewer prompt",
        ),
        REVIEWS_READY: CheckpointStep(
            REVIEWS_READY,
            "Reviews ready for consolidation",
            [
                _action(Action.APPROVE, approve_label, ActionStyle.PRIMARY),
                _action(
                    Action.REVISE,
                    "Send feedback → planner",
                    description="The feedback as edited and your notes go to the planner.",
                ),
                _action(Action.EDIT_PLANNER_PROMPT, "Edit planner prompt first"),
                CANCEL,
            ],
            _reviews_ready_view,
            partial(_reviews_ready_resolve, approved=approved),
            editable_label="Consolidated feedback",
        ),
        EDIT_PLANNER_PROMPT: CheckpointStep(
            EDIT_PLANNER_PROMPT,
            "Edit the planner's revision prompt",
            [
                _action(
                    Action.SEND_TO_PLANNER,
                    "Send to planner",
                    ActionStyle.PRIMARY,
                    requires_content=True,
                ),
                CANCEL,
            ],
            _edit_planner_prompt_view,
            _edit_planner_prompt_resolve,
            editable_label="Planner prompt",
        ),
        ITERATION_LIMIT: CheckpointStep(
            ITERATION_LIMIT,
            "Iteration limit reached",
            [
                _action(Action.APPROVE, "Approve current plan", ActionStyle.PRIMARY),
                _action(Action.EXTEND, "Allow one more iteration"),
                CANCEL,
            ],
            _limit_view,
            partial(_limit_resolve, approved=approved),
            editable_label="Current plan",
        ),
        AGENT_PROBLEM: CheckpointStep(
            AGENT_PROBLEM,
            "An agent failed",
            [
                CheckpointAction(
                    name=Action.RETRY,
                    label="Retry failed agents",
                    style=ActionStyle.PRIMARY,
                    inputs=[RETRY_TIMEOUT],
                ),
                _action(Action.SKIP_AGENT, "Continue without them"),
                _action(Action.MANUAL_INPUT, "Use my text instead", requires_content=True),
                CANCEL,
            ],
            _problem_view,
            _problem_resolve,
            editable_label="Your text (for manual input)",
        ),
    }


definition = WorkflowDefinition(
    type="plan_review",
    title="Plan & Review",
    state=PlanReviewState,
    first_step=PLAN,
    initial_state=_initial_state,
    after_commit=_write_plans,
    steps=plan_steps(),
)
