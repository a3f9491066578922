"""Plan & Review: a planner writes a plan, a person reviews it, reviewers review it
in parallel, the person consolidates their reviews, and the plan is approved or
revised in another iteration.

This is a workflow *definition*: pure functions of the workflow state that the
engine calls. State keys (all JSON):

- ``plan``: the current plan; ``plans``: every iteration's plan (``{"1": …}``)
- ``plan_output``: the planner's run that produced the current plan
- ``planner_prompt`` / ``reviewer_prompt``: the prompt for the next run (one
  iteration only; cleared once used)
- ``reviews``: this iteration's reviews; ``feedback``/``notes``: what goes back
- ``problem``: the failed step and agents while an ``agent_problem`` waits

With a workspace, the plans also go to disk (:mod:`orchestra.workflows.plan_files`)
from the ``after_commit`` hook, outside any transaction.
"""

from __future__ import annotations

import logging
from typing import Any

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
)
from orchestra.workflows import prompts
from orchestra.workflows.plan_files import FINAL, sync_plan
from orchestra.workflows.reviews import REVIEW_SCHEMA, consolidate, feedback_markdown, parse_review

log = logging.getLogger(__name__)

PLAN = "plan"
REVIEW = "review"
PLAN_READY = "plan_ready_for_review"
EDIT_REVIEWER_PROMPT = "edit_reviewer_prompt"
REVIEWS_READY = "reviews_ready_for_consolidation"
EDIT_PLANNER_PROMPT = "edit_planner_prompt"
ITERATION_LIMIT = "iteration_limit_reached"
AGENT_PROBLEM = "agent_problem"


def _action(
    name: str,
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


def _plan_version(ctx: StepContext) -> int:
    return ctx.iteration


def _default_reviewer_prompt(ctx: StepContext) -> str:
    return prompts.reviewer_prompt(ctx.prompt, ctx.state["plan"], _plan_version(ctx))


def _review_outputs(ctx: StepContext) -> list[AgentOutput]:
    return [AgentOutput.model_validate(r) for r in ctx.state.get("reviews", [])]


def _default_feedback(ctx: StepContext) -> str:
    outputs = _review_outputs(ctx)
    return feedback_markdown(outputs, consolidate(outputs))


def _limit_reached(ctx: StepContext) -> bool:
    return ctx.iteration >= ctx.max_iterations + int(ctx.state.get("extra_iterations", 0))


def _to_planner(ctx: StepContext, prompt: str) -> Next:
    """Send ``prompt`` to the planner for the next iteration (or stop at the limit)."""
    if _limit_reached(ctx):
        return Next(step=ITERATION_LIMIT, state={"pending_planner_prompt": prompt})
    return Next(
        step=PLAN,
        iteration=ctx.iteration + 1,
        state={"planner_prompt": prompt, "pending_planner_prompt": None},
    )


def _revision_prompt(ctx: StepContext, feedback: str, notes: str | None, by: str | None) -> str:
    return prompts.revision_prompt(
        ctx.prompt, ctx.state["plan"], _plan_version(ctx), feedback, notes, by
    )


def _output_of(run: AgentRun, agent_name: str) -> dict[str, Any]:
    structured = parse_review(run.output or "", run.structured) if run.role == "reviewer" else None
    return AgentOutput(
        agent=agent_name,
        role=run.role,
        content=run.output or "",
        structured=structured,
        agent_run_id=run.id,
    ).model_dump(mode="json")


def _agent_label(ctx: StepContext, key: str) -> str:
    if key == "planner":
        entry = ctx.agents["planner"]
    else:
        entry = ctx.agents["reviewers"][int(key.rsplit("-", 1)[1]) - 1]
    return f"{key} ({entry['name']})"


def _problem(
    ctx: StepContext, step: str, runs: dict[str, AgentRun], timeouts: dict[str, float]
) -> Next:
    failures = [
        {
            "agent": key,
            "label": _agent_label(ctx, key),
            "error": run.error or "no error recorded",
            "stderr_tail": run.stderr_tail or "",
            "agent_run_id": run.id,
            "timeout_s": timeouts.get(key),
        }
        for key, run in sorted(runs.items())
        if run.status is AgentRunStatus.FAILED
    ]
    succeeded = [
        _output_of(run, _agent_label(ctx, key))
        for key, run in sorted(runs.items())
        if run.status is AgentRunStatus.COMPLETED
    ]
    return Next(
        step=AGENT_PROBLEM,
        state={"problem": {"step": step, "failures": failures, "succeeded": succeeded}},
    )


def _timeout(ctx: StepContext, entry: dict[str, Any], role: str) -> float:
    return float(
        entry.get("timeout_s")
        or ctx.agents.get(f"{role}_timeout_s")
        or (600 if role == "planner" else 300)
    )


# -- agent steps -----------------------------------------------------------


def _plan_tasks(ctx: StepContext) -> list[AgentTask]:
    entry = ctx.agents["planner"]
    prompt = ctx.state.get("planner_prompt") or prompts.planner_prompt(ctx.prompt)
    options = entry.get("options", {})
    # A planner configured with ``resume = true`` continues its own session.
    session = ctx.state.get("planner_session") if options.get("resume") is True else None
    return [
        AgentTask(
            key="planner",
            role="planner",
            adapter=entry["adapter"],
            options=options,
            prompt=prompt,
            timeout_s=_timeout(ctx, entry, "planner"),
            resume_session=session if isinstance(session, str) and session else None,
        )
    ]


def _plan_done(ctx: StepContext, runs: dict[str, AgentRun]) -> Next:
    run = runs["planner"]
    if run.status is not AgentRunStatus.COMPLETED:
        return _problem(
            ctx, PLAN, runs, {"planner": _timeout(ctx, ctx.agents["planner"], "planner")}
        )
    plan = run.output or ""
    plans = {**ctx.state.get("plans", {}), str(ctx.iteration): plan}
    return Next(
        step=PLAN_READY,
        state={
            "plan": plan,
            "plans": plans,
            "planner_prompt": None,
            "problem": None,
            "plan_output": _output_of(run, _agent_label(ctx, "planner")),
            "planner_session": (run.meta or {}).get("session_id"),
        },
    )


def _review_tasks(ctx: StepContext) -> list[AgentTask]:
    prompt = ctx.state.get("reviewer_prompt") or _default_reviewer_prompt(ctx)
    return [
        AgentTask(
            key=f"reviewer-{i}",
            role="reviewer",
            adapter=entry["adapter"],
            options=entry.get("options", {}),
            prompt=prompt,
            timeout_s=_timeout(ctx, entry, "reviewer"),
            output_schema=REVIEW_SCHEMA,
        )
        for i, entry in enumerate(ctx.agents["reviewers"], start=1)
    ]


def _review_done(ctx: StepContext, runs: dict[str, AgentRun]) -> Next:
    if any(run.status is AgentRunStatus.FAILED for run in runs.values()):
        timeouts = {t.key: t.timeout_s for t in _review_tasks(ctx)}
        return _problem(ctx, REVIEW, runs, timeouts)
    reviews = [
        _output_of(run, _agent_label(ctx, key))
        for key, run in sorted(runs.items())
        if run.status is AgentRunStatus.COMPLETED
    ]
    return Next(
        step=REVIEWS_READY, state={"reviews": reviews, "reviewer_prompt": None, "problem": None}
    )


# -- checkpoints -----------------------------------------------------------


def _plan_ready_view(ctx: StepContext) -> CheckpointView:
    outputs = (
        [AgentOutput.model_validate(ctx.state["plan_output"])]
        if ctx.state.get("plan_output")
        else []
    )
    return CheckpointView(
        instructions=(
            f"Read the plan (version {ctx.iteration}). Edit it if needed, then approve it to "
            "send it to the reviewers, or edit the reviewers' prompt first."
        ),
        agent_outputs=outputs,
        editable_content=ctx.state["plan"],
        context={
            "iteration": ctx.iteration,
            "plan_versions": sorted(ctx.state.get("plans", {}), key=int),
        },
    )


def _with_edited_plan(ctx: StepContext, decision: Resolution) -> dict[str, Any]:
    if decision.text is None or decision.text == ctx.state["plan"]:
        return {}
    plans = {**ctx.state.get("plans", {}), str(ctx.iteration): decision.text}
    return {"plan": decision.text, "plans": plans}


def _plan_ready_resolve(ctx: StepContext, decision: Resolution) -> Next:
    edited = _with_edited_plan(ctx, decision)
    if decision.action == "edit_reviewer_prompt":
        return Next(step=EDIT_REVIEWER_PROMPT, state=edited)
    return Next(step=REVIEW, state=edited)


def _edit_reviewer_prompt_view(ctx: StepContext) -> CheckpointView:
    return CheckpointView(
        instructions="This is the exact prompt every reviewer will receive for this "
        "iteration. Edit it and send it to the reviewers.",
        editable_content=_default_reviewer_prompt(ctx),
        context={"iteration": ctx.iteration},
    )


def _edit_reviewer_prompt_resolve(ctx: StepContext, decision: Resolution) -> Next:
    return Next(step=REVIEW, state={"reviewer_prompt": decision.text})


def _reviews_ready_view(ctx: StepContext) -> CheckpointView:
    outputs = _review_outputs(ctx)
    consolidation = consolidate(outputs)
    return CheckpointView(
        instructions=(
            "Read the reviews. Approve the plan to finish, or edit the consolidated "
            "feedback (and add notes) and send it back to the planner for a revision."
        ),
        agent_outputs=outputs,
        editable_content=feedback_markdown(outputs, consolidation),
        consolidation=consolidation,
        context={
            "iteration": ctx.iteration,
            "plan": ctx.state["plan"],
            "max_iterations": ctx.max_iterations,
        },
    )


def _reviews_ready_resolve(ctx: StepContext, decision: Resolution) -> Next:
    if decision.action == "approve":
        return _complete(ctx)
    feedback = decision.text or _default_feedback(ctx)
    keep = {"feedback": feedback, "notes": decision.notes, "notes_by": decision.resolved_by}
    if decision.action == "edit_planner_prompt":
        return Next(step=EDIT_PLANNER_PROMPT, state=keep)
    nxt = _to_planner(ctx, _revision_prompt(ctx, feedback, decision.notes, decision.resolved_by))
    return Next(step=nxt.step, iteration=nxt.iteration, state={**keep, **nxt.state})


def _complete(ctx: StepContext) -> Next:
    return Next(
        step=None,
        result={
            "plan": ctx.state["plan"],
            "iterations": ctx.iteration,
            "plans": ctx.state.get("plans", {}),
        },
    )


def _edit_planner_prompt_view(ctx: StepContext) -> CheckpointView:
    prompt = _revision_prompt(
        ctx,
        ctx.state.get("feedback") or _default_feedback(ctx),
        ctx.state.get("notes"),
        ctx.state.get("notes_by"),
    )
    return CheckpointView(
        instructions="This is the exact prompt the planner will receive for the next "
        "iteration. Edit it and send it to the planner.",
        editable_content=prompt,
        context={"iteration": ctx.iteration},
    )


def _edit_planner_prompt_resolve(ctx: StepContext, decision: Resolution) -> Next:
    assert decision.text is not None  # requires_content
    return _to_planner(ctx, decision.text)


def _limit_view(ctx: StepContext) -> CheckpointView:
    return CheckpointView(
        instructions=(
            f"The plan has been through {ctx.iteration} of {ctx.max_iterations} allowed "
            "iterations. Approve the current plan, allow one more iteration, or cancel."
        ),
        editable_content=ctx.state["plan"],
        context={"iteration": ctx.iteration, "max_iterations": ctx.max_iterations},
    )


def _limit_resolve(ctx: StepContext, decision: Resolution) -> Next:
    if decision.action == "approve":
        return _complete(ctx)
    extra = int(ctx.state.get("extra_iterations", 0)) + 1
    return Next(
        step=PLAN,
        iteration=ctx.iteration + 1,
        state={
            "extra_iterations": extra,
            "planner_prompt": ctx.state["pending_planner_prompt"],
            "pending_planner_prompt": None,
        },
    )


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


#: The role whose agents run in a step, as agent outputs name it elsewhere.
_ROLE_OF_STEP = {PLAN: "planner", REVIEW: "reviewer"}


def _max_timeout(ctx: StepContext) -> float:
    """The operator's cap on agent timeouts, as the workflow recorded it at creation."""
    return float(ctx.agents.get("max_timeout_s") or DEFAULT_MAX_AGENT_TIMEOUT_S)


def _problem_view(ctx: StepContext) -> CheckpointView:
    problem = ctx.state["problem"]
    failures = problem["failures"]
    names = ", ".join(f["label"] for f in failures)
    outputs = [
        AgentOutput(
            agent=f["label"],
            role=_ROLE_OF_STEP.get(problem["step"], problem["step"]),
            content=f["stderr_tail"],
            agent_run_id=f["agent_run_id"],
            status=AgentRunStatus.FAILED,
            error=f["error"],
        )
        for f in failures
    ]
    outputs += [AgentOutput.model_validate(s) for s in problem["succeeded"]]
    hide = (
        frozenset()
        if problem["step"] == REVIEW and problem["succeeded"]
        else frozenset({"skip_agent"})
    )
    return CheckpointView(
        instructions=(
            f"{names} failed: " + "; ".join(f["error"] for f in failures) + ". Retry the "
            "failed agents (optionally with a longer timeout; after a timeout the retry "
            "doubles it), skip them, or write their answer yourself."
        ),
        agent_outputs=outputs,
        editable_content="",
        context={"failed_step": problem["step"], "failures": failures},
        hide_actions=hide,
        input_maximum={RETRY_TIMEOUT.name: _max_timeout(ctx)},
    )


def _problem_resolve(ctx: StepContext, decision: Resolution) -> Next:
    problem = ctx.state["problem"]
    step = problem["step"]
    if decision.action == "retry":
        chosen = (decision.inputs or {}).get(RETRY_TIMEOUT.name)
        retry: dict[str, float | None] = {}
        for f in problem["failures"]:
            longer = chosen
            if longer is None and f["error"].startswith("timeout") and f["timeout_s"]:
                longer = min(2 * float(f["timeout_s"]), _max_timeout(ctx))
            retry[f["agent"]] = longer
        return Next(step=step, state={"problem": None}, retry=retry)
    if step == PLAN:  # manual_input: the person's text is the plan
        assert decision.text is not None
        plans = {**ctx.state.get("plans", {}), str(ctx.iteration): decision.text}
        output = AgentOutput(
            agent=decision.resolved_by, role="planner (manual)", content=decision.text
        )
        return Next(
            step=PLAN_READY,
            state={
                "plan": decision.text,
                "plans": plans,
                "planner_prompt": None,
                "problem": None,
                "plan_output": output.model_dump(mode="json"),
            },
        )
    reviews = list(problem["succeeded"])
    if decision.action == "manual_input":
        assert decision.text is not None
        reviews.append(
            AgentOutput(
                agent=f"{decision.resolved_by} (manual review)",
                role="reviewer",
                content=decision.text,
                structured=parse_review(decision.text),
            ).model_dump(mode="json")
        )
    return Next(
        step=REVIEWS_READY,
        skip_failed=REVIEW,
        state={"reviews": reviews, "reviewer_prompt": None, "problem": None},
    )


# -- plans on disk ---------------------------------------------------------


def _write_plans(done: Committed) -> None:
    """Keep the workspace's plan files in step with the committed state: the current
    iteration's plan (as produced, or as a person edited it) and, once the workflow
    completed, the final plan. Idempotent: unchanged files are not rewritten."""
    ctx = done.ctx
    if ctx.workspace is None:
        return
    wanted: list[tuple[int | str, str]] = []
    plan = ctx.state.get("plans", {}).get(str(ctx.iteration))
    if isinstance(plan, str):
        wanted.append((ctx.iteration, plan))
    final = (done.result or {}).get("plan")
    if done.status is WorkflowStatus.COMPLETED and isinstance(final, str):
        wanted.append((FINAL, final))
    for version, text in wanted:
        path = sync_plan(ctx.workspace, ctx.workflow_id, ctx.name, version, text)
        if path is not None:
            log.info("workflow %s: plan %s written to %s", ctx.workflow_id, version, path)


# -- agents entry ----------------------------------------------------------


def _validate_agents(agents: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(agents.get("planner"), dict):
        raise InvalidInput("agents.planner is required", details={"field": "agents.planner"})
    reviewers = agents.get("reviewers")
    if not isinstance(reviewers, list) or not reviewers:
        raise InvalidInput(
            "agents.reviewers needs at least one reviewer", details={"field": "agents.reviewers"}
        )
    if len(reviewers) > 10:
        raise InvalidInput("at most 10 reviewers", details={"field": "agents.reviewers"})
    return {}


definition = WorkflowDefinition(
    type="plan_review",
    title="Plan & Review",
    first_step=PLAN,
    initial_state=_validate_agents,
    after_commit=_write_plans,
    steps={
        PLAN: AgentStep(PLAN, _plan_tasks, _plan_done),
        REVIEW: AgentStep(REVIEW, _review_tasks, _review_done),
        PLAN_READY: CheckpointStep(
            PLAN_READY,
            "Plan ready for review",
            [
                _action(
                    "approve",
                    "Approve plan → reviewers",
                    ActionStyle.PRIMARY,
                    description="Send the plan (as edited) to every reviewer.",
                ),
                _action("edit_reviewer_prompt", "Edit reviewer prompt first"),
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
                    "send_to_reviewers",
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
                _action("approve", "Approve plan (finish)", ActionStyle.PRIMARY),
                _action(
                    "revise",
                    "Send feedback → planner",
                    description="The feedback as edited and your notes go to the planner.",
                ),
                _action("edit_planner_prompt", "Edit planner prompt first"),
                CANCEL,
            ],
            _reviews_ready_view,
            _reviews_ready_resolve,
            editable_label="Consolidated feedback",
        ),
        EDIT_PLANNER_PROMPT: CheckpointStep(
            EDIT_PLANNER_PROMPT,
            "Edit the planner's revision prompt",
            [
                _action(
                    "send_to_planner", "Send to planner", ActionStyle.PRIMARY, requires_content=True
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
                _action("approve", "Approve current plan", ActionStyle.PRIMARY),
                _action("extend", "Allow one more iteration"),
                CANCEL,
            ],
            _limit_view,
            _limit_resolve,
            editable_label="Current plan",
        ),
        AGENT_PROBLEM: CheckpointStep(
            AGENT_PROBLEM,
            "An agent failed",
            [
                CheckpointAction(
                    name="retry",
                    label="Retry failed agents",
                    style=ActionStyle.PRIMARY,
                    inputs=[RETRY_TIMEOUT],
                ),
                _action("skip_agent", "Continue without them"),
                _action("manual_input", "Use my text instead", requires_content=True),
                CANCEL,
            ],
            _problem_view,
            _problem_resolve,
            editable_label="Your text (for manual input)",
        ),
    },
)
