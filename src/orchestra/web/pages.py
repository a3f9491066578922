"""The dashboard's pages: server-rendered from the service layer, refreshed in place.

Every page is one Jinja template whose live parts are blocks marked with
``data-region``. Asked with ``?partial=1`` (by ``static/app.js``, when an event
arrives on the stream), a page answers those blocks as JSON instead of the
whole document, so the script patches the DOM without a reload and without
knowing how anything is rendered. Errors render as a page (or, for the
script, as the API's JSON error shape); nothing answers with a blank page.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment
from jinja2.runtime import Macro
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from orchestra.api.auth import CSRF_HEADER, SESSION_COOKIE, Principal, session_of
from orchestra.api.errors import CODE_BY_STATUS, error_response, status_of
from orchestra.api.hub import EventHub
from orchestra.domain.durations import MAX_TEXT
from orchestra.domain.errors import InvalidInput, OrchestraError
from orchestra.domain.events import EventType
from orchestra.domain.models import MAX_BATCH, BatchResult, Checkpoint, Decision, InboxFilter, Page
from orchestra.domain.roles import Permission
from orchestra.domain.statuses import (
    ActionStyle,
    AgentRunStatus,
    CheckpointStatus,
    SnoozedView,
    WorkflowStatus,
)
from orchestra.domain.untrusted import encodable
from orchestra.engine.definition import WorkflowDefinition, definitions
from orchestra.runtime import Runtime
from orchestra.service import MAX_ITERATIONS_LIMIT
from orchestra.store.links import LinkState, open_link
from orchestra.store.sessions import end_session, find_session, open_session
from orchestra.store.tokens import authenticate_token
from orchestra.web import session
from orchestra.web.code_view import FILE_HTML, code_view, takes_comments
from orchestra.web.diff import Diff
from orchestra.web.forms import MAX_RESOLVE_FIELDS, decision_from_form
from orchestra.web.markdown import RENDERED, markdown_filter
from orchestra.web.render_pool import RenderPool
from orchestra.web.session import BadForm, PageDenied, first
from orchestra.web.templating import environment
from orchestra.web.view import (
    DiffChoice,
    edit_texts,
    humanize,
    snapshot_of,
    tone,
    workflow_view,
)

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
STATIC = HERE / "static"
LIST_PAGE = 25
INBOX_PAGE = 50
#: The navigation badge counts pending checkpoints up to this many ("1000+" beyond):
#: a page never walks all of them.
MAX_REVIEWER_SLOTS = 8
#: The new-workflow form's fields, in page order.
FORM_FIELDS = (
    "name",
    "type",
    "prompt",
    "workspace_path",
    "planner",
    "reviewers",
    "implementer",
    "max_iterations",
    "deadline_after",
    "default_action",
)
#: Why a decision link does not open, said plainly (and where to go instead).
_INBOX_HINT = " Find the checkpoint in your inbox (/inbox) instead."
LINK_PROBLEMS = {
    LinkState.USED: (
        410,
        "This decision link has already been used (each opens once)." + _INBOX_HINT,
    ),
    LinkState.EXPIRED: (410, "This decision link has expired." + _INBOX_HINT),
    LinkState.UNKNOWN: (
        404,
        "This decision link is not known here (mistyped or removed)." + _INBOX_HINT,
    ),
}
#: The inbox's age filter, and the snooze buttons of each row (value, label).
INBOX_AGES = (
    ("1h", "over 1 hour"),
    ("4h", "over 4 hours"),
    ("1d", "over a day"),
    ("7d", "over a week"),
)
SNOOZE_CHOICES = (("1h", "1 h"), ("4h", "4 h"), ("1d", "Tomorrow"))
#: Template blocks named ``region_<name>`` fill the element ``data-region="<name>"``.
REGION = "region_"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

#: What the script may compare against: the vocabulary, never spelled out in JS.
VOCABULARY = {
    "events": {e.name: e.value for e in EventType},
    "workflowStatus": {s.name: s.value for s in WorkflowStatus},
    "checkpointStatus": {s.name: s.value for s in CheckpointStatus},
    "agentRunStatus": {s.name: s.value for s in AgentRunStatus},
    "actionStyle": {s.name: s.value for s in ActionStyle},
}


def _static_versions() -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:10]
        for p in STATIC.iterdir()
        if p.is_file()
    }


def build_environment() -> Environment:
    env = environment()
    versions = _static_versions()
    env.globals["static_url"] = lambda name: f"/static/{name}?v={versions.get(name, '0')}"
    # Looks up what the handler rendered off the loop (Web.rich_page); never renders itself.
    env.filters["markdown"] = markdown_filter
    env.filters["humanize"] = humanize
    env.filters["tone"] = tone
    env.filters["duration"] = format_duration
    env.globals["WS"] = WorkflowStatus
    env.globals["CS"] = CheckpointStatus
    env.globals["styles"] = ActionStyle
    # Looks up the file tables rendered off the loop (Web.rich_page), as |markdown does.
    env.globals["code_view"] = code_view
    env.globals["takes_comments"] = takes_comments
    env.globals["csrf_field"] = session.CSRF_FIELD
    env.globals["snapshot_of"] = snapshot_of
    # The shared macros are globals, so a block rendered alone (?partial=1) has them too.
    macros = env.get_template("macros.html").module
    env.globals.update({k: v for k, v in vars(macros).items() if isinstance(v, Macro)})
    return env


def format_duration(ms: int | float | None) -> str:
    if ms is None:
        return ""
    seconds = ms / 1000
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 90:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


class Web:
    """The pages of one app, around one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.service = runtime.service
        self.env = build_environment()
        self.renders = RenderPool()

    # -- rendering -------------------------------------------------------------

    def _context(
        self, request: Request, who: Principal | None, page: str, extra: Mapping[str, Any]
    ) -> dict[str, Any]:
        no_auth = self.runtime.settings.no_auth
        client = {
            "page": page,
            "csrf": session.csrf_value(request),
            "csrfHeader": CSRF_HEADER,
            "vocabulary": VOCABULARY,
            **extra.get("client", {}),
        }
        return {
            "request": request,
            "page": page,
            "who": who,
            "no_auth": no_auth,
            "can": {p.value: bool(who and who.may(p)) for p in Permission},
            "csrf": session.csrf_value(request),
            "csrf_field": session.CSRF_FIELD,
            "statuses": {
                "workflow": list(WorkflowStatus),
                "checkpoint": list(CheckpointStatus),
                "agent_run": list(AgentRunStatus),
            },
            "inbox_count": extra.get("inbox_count"),
            **extra,
            "client": client,
        }

    def page(
        self,
        request: Request,
        template: str,
        *,
        who: Principal | None,
        page: str,
        status: int = 200,
        **extra: Any,
    ) -> Response:
        ctx = self._context(request, who, page, extra)
        return self._respond(request, template, ctx, status, extra)

    async def rich_page(
        self,
        request: Request,
        template: str,
        *,
        who: Principal | None,
        page: str,
        status: int = 200,
        diffs: Callable[[list[Diff]], Mapping[str, Any]] | None = None,
        pairs: list[tuple[str, str]] | None = None,
        **extra: Any,
    ) -> Response:
        """A page with agent or client markdown (and diffs): rendered off the loop first.

        The template is run once to collect the texts its ``|markdown`` asks for (and
        the files its ``code_view`` shows), they (and ``pairs``, to diff) are rendered
        in :class:`RenderPool`, and the
        template is run again with the results; ``diffs`` turns the diffs into
        more context.
        """
        ctx = self._context(request, who, page, extra)
        partial = bool(request.query_params.get("partial"))
        wanted: set[str] = set()
        files: set[str] = set()
        token, tables = RENDERED.set(wanted), FILE_HTML.set(files)
        try:
            self._render(template, ctx, partial)
        finally:
            RENDERED.reset(token)
            FILE_HTML.reset(tables)
        done = await self.renders.render(wanted, pairs or [], files)
        if diffs is not None:
            more = diffs(done.diffs)
            ctx.update(more)
            extra = {**extra, **more}
        token, tables = RENDERED.set(done.html), FILE_HTML.set(done.files)
        try:
            return self._respond(request, template, ctx, status, extra)
        finally:
            RENDERED.reset(token)
            FILE_HTML.reset(tables)

    def _render(self, template: str, ctx: dict[str, Any], partial: bool) -> str | dict[str, str]:
        """The whole page, or (``partial``) its live regions by name."""
        tmpl = self.env.get_template(template)
        if partial:
            context = tmpl.new_context(ctx)
            return {
                name.removeprefix(REGION): "".join(block(context))
                for name, block in tmpl.blocks.items()
                if name.startswith(REGION)
            }
        return tmpl.render(ctx)

    def _respond(
        self,
        request: Request,
        template: str,
        ctx: dict[str, Any],
        status: int,
        extra: Mapping[str, Any],
    ) -> Response:
        body = self._render(template, ctx, bool(request.query_params.get("partial")))
        if isinstance(body, dict):
            data = {"regions": body, "last_event_id": extra.get("client", {}).get("after")}
            return session.finish(request, JSONResponse(data, status_code=status))
        response = HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)
        return session.finish(request, response)

    def error_page(self, request: Request, status: int, message: str) -> Response:
        if _wants_json(request) or request.url.path.startswith("/api/"):
            return error_response(status, CODE_BY_STATUS.get(status, f"http_{status}"), message)
        try:
            html = self.env.get_template("error.html").render(
                self._context(request, None, "error", {"status": status, "message": message})
            )
        except Exception:  # the error page itself must not fail into a blank page
            log.exception("rendering the error page failed")
            return HTMLResponse(f"<h1>Error {status}</h1>", status_code=status)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    # -- shared reads ------------------------------------------------------------

    async def _inbox_count(self) -> str:
        counts = await self.service.count_inbox()
        return counts.shown(counts.pending)

    async def _last_event_id(self, request: Request) -> int:
        """Where the page's live updates start: the event hub's position when it is
        running (no database read), else the log's settled end."""
        hub: EventHub = request.app.state.hub  # as the event streams take it
        position = hub.position()
        return position if position is not None else await self.service.last_event_id()

    # -- workflows list ------------------------------------------------------------

    async def workflows(
        self,
        request: Request,
        status: Annotated[list[str] | None, Query()] = None,
        cursor: str | None = None,
        before: str | None = None,
    ) -> Response:
        who = await session.principal(request)
        after = await self._last_event_id(request)  # before the reads: replays, never misses
        chosen: list[WorkflowStatus] = []
        for raw in status or []:
            try:
                chosen.append(WorkflowStatus(raw))
            except ValueError:
                raise InvalidInput(f"unknown status {raw!r}", details={"field": "status"}) from None
        listing = await self.service.list_workflows(
            statuses=chosen or None, limit=LIST_PAGE, cursor=cursor, before=before
        )
        waiting = await self.service.pending_by_workflow([wf.id for wf in listing.items])
        return self.page(
            request,
            "workflows.html",
            who=who,
            page="workflows",
            workflows=listing.items,
            next_cursor=listing.next_cursor,
            prev_cursor=listing.prev_cursor,
            paged=cursor is not None or before is not None,
            chosen=chosen,
            waiting=waiting,
            inbox_count=await self._inbox_count(),
            client={"stream": "/api/events/stream", "after": after},
        )

    # -- new workflow ----------------------------------------------------------------

    def _form(
        self,
        request: Request,
        who: Principal,
        values: Mapping[str, Any] | None = None,
        errors: Mapping[str, str] | None = None,
    ) -> Response:
        """The new-workflow form: the configured defaults, or what was posted and why not."""
        config = self.service.agents
        defaults = {
            "name": "",
            "type": "plan_review",
            "prompt": "",
            "workspace_path": "",
            "planner": config.planner,
            "reviewers": list(config.reviewers),
            "implementer": config.implementer or config.planner,
            "max_iterations": "3",
            "deadline_after": "",
            "default_action": "",
        }
        return self.page(
            request,
            "new.html",
            who=who,
            page="new",
            status=422 if errors else 200,
            values=values or defaults,
            errors=errors or {},
            # The first field with a problem (or the first field) takes the focus.
            focus=next((f for f in FORM_FIELDS if f in (errors or {})), FORM_FIELDS[0]),
            agent_names=sorted(config.agents),
            # Every workflow type, and which of them take an implementer.
            types=[(d.type, d.title) for d in sorted(definitions().values(), key=_by_type)],
            implementing={t for t, d in definitions().items() if "implementer" in d.agent_jobs},
            reviewer_slots=min(MAX_REVIEWER_SLOTS, max(len(config.reviewers), 3) + 1),
            max_iterations_limit=MAX_ITERATIONS_LIMIT,
        )

    async def new_workflow_form(self, request: Request) -> Response:
        return self._form(request, await session.principal(request, Permission.CREATE))

    async def create_workflow(self, request: Request) -> Response:
        who = await session.principal(request, Permission.CREATE)
        fields = await session.read_form(request)
        name, prompt = first(fields, "name"), first(fields, "prompt")
        workspace = first(fields, "workspace_path").strip()
        planner = first(fields, "planner")
        reviewers = [r for r in fields.get("reviewers", []) if r]
        kind = first(fields, "type") or "plan_review"
        implementer = first(fields, "implementer")
        raw_iterations = first(fields, "max_iterations").strip()
        due, default_action = (
            first(fields, "deadline_after").strip(),
            first(fields, "default_action"),
        )
        # Empty fields: no deadline of the workflow's own (the configured ones still apply).
        deadline = {"after": due or None, "default_action": default_action.strip() or None}
        errors: dict[str, str] = {}
        try:
            max_iterations = int(raw_iterations)
        except ValueError:
            errors["max_iterations"] = "a whole number, please"
            max_iterations = 0
        if not reviewers:
            errors["reviewers"] = "choose at least one reviewer"
        agents: dict[str, Any] = {"planner": planner, "reviewers": reviewers}
        known = definitions().get(kind)
        if known is None:
            errors["type"] = "choose one of the workflow types listed"
        elif "implementer" in known.agent_jobs:
            agents["implementer"] = implementer or None
        if not errors:
            try:
                wf = await self.service.create_workflow(
                    name=name,
                    prompt=prompt,
                    type=kind,
                    workspace_path=workspace or None,
                    agents=agents,
                    max_iterations=max_iterations,
                    created_by=who.name,
                    deadline=deadline if due or deadline["default_action"] else None,
                )
            except InvalidInput as exc:
                errors[_form_field(exc.details.get("field"))] = exc.message
            else:
                return session.finish(
                    request, RedirectResponse(f"/workflows/{wf.id}", status_code=303)
                )
        values = {
            "name": name,
            "type": kind,
            "prompt": prompt,
            "workspace_path": workspace,
            "planner": planner,
            "reviewers": reviewers,
            "implementer": implementer,
            "max_iterations": raw_iterations,
            "deadline_after": due,
            "default_action": default_action,
        }
        return self._form(request, who, values, errors)

    # -- one workflow ------------------------------------------------------------------

    async def workflow(
        self,
        request: Request,
        workflow_id: str,
        doc: str | None = None,
        old: int | None = None,
        new: int | None = None,
    ) -> Response:
        who = await session.principal(request)
        history = await self.service.history(workflow_id)
        view = workflow_view(history)
        edits = edit_texts(history.checkpoints)
        chosen = view.diff_texts(doc, old, new)
        pairs = list(edits.values()) + ([chosen[3:]] if chosen else [])

        def with_diffs(diffs: list[Diff]) -> dict[str, Any]:
            """The view again, with the edits' diffs, and the chosen versions' diff."""
            done = workflow_view(history, dict(zip(edits, diffs, strict=False)))
            choice = DiffChoice(*chosen[:3], diffs[-1]) if chosen else None
            return {"view": done, "diff": choice}

        query = [(k, v) for k, v in request.query_params.multi_items() if k != "partial"]
        partial = f"{request.url.path}?{urlencode(query)}"
        counts = await self.service.count_inbox()
        return await self.rich_page(
            request,
            "workflow.html",
            who=who,
            page="workflow",
            wf=view.workflow,
            view=view,
            diff=None,
            pairs=pairs,
            diffs=with_diffs,
            inbox_count=counts.shown(counts.pending),
            client={
                "stream": f"/api/workflows/{workflow_id}/events/stream",
                "after": view.last_event_id,
                "refresh": partial,
                "workflowId": workflow_id,
            },
        )

    async def resolve(self, request: Request, checkpoint_id: str) -> Response:
        """The resolve form, posted by the page's script or, without it, by the browser:
        the script gets the checkpoint (or the API's error, details and all) as JSON; a
        plain post goes back to the workflow, or to the error page with nothing resolved."""
        who = await session.principal(request, Permission.RESOLVE)
        fields = await session.read_form(request, max_fields=MAX_RESOLVE_FIELDS)
        decision = decision_from_form(fields)
        try:
            cp = await self.service.resolve(
                checkpoint_id,
                decision,
                actor=who.name,
                idempotency_key=request.headers.get("idempotency-key"),
            )
        except OrchestraError as exc:
            if not _wants_json(request):
                raise
            return error_response(status_of(exc), exc.code, exc.message, exc.details)
        if _wants_json(request):
            return JSONResponse(cp.model_dump(mode="json"))
        return RedirectResponse(f"/workflows/{cp.workflow_id}#checkpoint-{cp.id}", status_code=303)

    async def checkpoint_panel(self, request: Request, checkpoint_id: str) -> Response:
        """One checkpoint's panel (the inbox opens them in place)."""
        who = await session.principal(request)
        cp = await self.service.get_checkpoint(checkpoint_id)
        return await self.rich_page(request, "panel.html", who=who, page="panel", cp=cp)

    # -- inbox --------------------------------------------------------------------------

    async def inbox(
        self,
        request: Request,
        cursor: str | None = None,
        before: str | None = None,
        batch: BatchResult | None = None,
        workflow: Annotated[str | None, Query(max_length=32)] = None,
        step: Annotated[str | None, Query(max_length=64)] = None,
        older_than: Annotated[str | None, Query(max_length=MAX_TEXT)] = None,
        snoozed: bool = False,
    ) -> Response:
        """The decisions waiting, filtered by workflow, step and age; ``snoozed``: the
        snoozed ones instead (the "Snoozed (N)" view). A bad filter is a 422 page that
        says what to write, with the form kept as typed."""
        who = await session.principal(request)
        after = await self._last_event_id(request)
        given = InboxFilter(
            workflow=(workflow or "").strip() or None,
            step=step or None,
            older_than=(older_than or "").strip() or None,
            snoozed=SnoozedView.ONLY if snoozed else SnoozedView.HIDE,
        )
        status, problem = 200, ""
        try:
            listing = await self.service.list_checkpoints(
                limit=INBOX_PAGE, cursor=cursor, before=before, filter=given
            )
        except InvalidInput as exc:
            status, problem = 422, exc.message
            listing = Page[Checkpoint](items=[])
        names = await self.service.workflow_names([cp.workflow_id for cp in listing.items])
        offered = sorted({a.name for cp in listing.items for a in cp.actions})
        counts = await self.service.count_inbox()
        here = [(k, v) for k, v in request.query_params.multi_items() if k != "partial"]
        filters = {k: v for k, v in here if k in ("workflow", "step", "older_than") and v}
        return self.page(
            request,
            "inbox.html",
            who=who,
            page="inbox",
            status=status,
            checkpoints=listing.items,
            names=names,
            next_cursor=listing.next_cursor,
            cursor=cursor,
            prev_cursor=listing.prev_cursor,
            paged=cursor is not None or before is not None,
            inbox_count=counts.shown(counts.pending),
            counts=counts,
            client={"stream": "/api/events/stream", "after": after},
            offered_actions=offered,
            batch=batch,
            can_resolve=who.may(Permission.RESOLVE),
            given=given,
            snoozed_view=snoozed,
            filter_error=problem,
            filtered=bool(filters),
            steps=self.service.checkpoint_steps(),
            ages=INBOX_AGES,
            snooze_choices=SNOOZE_CHOICES,
            here=f"/inbox?{urlencode(here)}" if here else "/inbox",
            more_url="/inbox?" + urlencode({**filters, **({"snoozed": "1"} if snoozed else {})}),
        )

    async def snooze(self, request: Request, checkpoint_id: str) -> Response:
        """A row's snooze buttons (``until``: 1h, 4h, 1d…) and its "Back now" button
        (``until`` empty): JSON for the script, else back to the inbox page it came from."""
        who = await session.principal(request, Permission.RESOLVE)
        fields = await session.read_form(request)
        until = first(fields, "until").strip()
        try:
            if until:
                cp = await self.service.snooze(checkpoint_id, until, actor=who.name)
            else:
                cp = await self.service.unsnooze(checkpoint_id, actor=who.name)
        except OrchestraError as exc:
            if not _wants_json(request):
                raise
            return error_response(status_of(exc), exc.code, exc.message, exc.details)
        if _wants_json(request):
            return JSONResponse(cp.model_dump(mode="json"))
        target = session.safe_next(first(fields, "next"))
        return RedirectResponse(target if target.startswith("/inbox") else "/inbox", 303)

    async def resolve_batch(self, request: Request) -> Response:
        """The inbox's batch form: one action for the checked checkpoints, each its own
        resolution; the inbox again, saying what happened to each."""
        who = await session.principal(request, Permission.RESOLVE)
        fields = await session.read_form(request, max_fields=MAX_BATCH + 10)
        ids = fields.get("checkpoint_id", [])
        if not ids:
            raise BadForm(422, "tick at least one checkpoint, then choose the action")
        decision = Decision(action=first(fields, "action"), notes=first(fields, "notes") or None)
        done = await self.service.resolve_batch(ids, decision, actor=who.name)
        return await self.inbox(request, batch=done)

    # -- markdown preview ------------------------------------------------------------------

    async def preview(self, request: Request) -> Response:
        """The editor's preview and changes tabs (server-side: one markdown renderer)."""
        await session.principal(request)
        session.check_csrf_header(request)
        try:
            body = await request.json()
        except ValueError:
            raise BadForm(400, "send JSON: {text, original}") from None
        text, original = body.get("text"), body.get("original")
        if not isinstance(text, str) or not isinstance(original, str | None):
            raise BadForm(400, "text (and original) must be strings")
        for name, value in (("text", text), ("original", original or "")):
            if not encodable(value):
                raise BadForm(422, f"{name} cannot be encoded as UTF-8 (a lone surrogate)")
        done = await self.renders.render([text], [(original or "", text)])
        diff = self.env.get_template("diff.html").render(diff=done.diffs[0])
        return JSONResponse({"html": str(done.html[text]), "diff_html": diff})

    # -- decision links (from notifications) ------------------------------------------

    async def decision_link(self, request: Request, token: str) -> Response:
        """A notification's single-use link: after a normal login (no session: the
        login page, then back here), used once, then the checkpoint's workflow page.
        It opens a page and nothing more: the page asks for the session and role as
        always, and no decision is taken here."""
        who = await session.principal(request)
        opened = await open_link(self.runtime.db, token, who.name)
        if opened.state is LinkState.OPENED:
            log.info("decision link to checkpoint %s opened by %s", opened.checkpoint_id, who.name)
            target = f"/workflows/{opened.workflow_id}#decide"
            return session.finish(request, RedirectResponse(target, status_code=303))
        status, message = LINK_PROBLEMS[opened.state]
        return self.error_page(request, status, message)

    # -- login --------------------------------------------------------------------------

    async def login_form(self, request: Request, next: str | None = None) -> Response:
        if self.runtime.settings.no_auth:
            return RedirectResponse(session.safe_next(next), status_code=303)
        return self.page(
            request, "login.html", who=None, page="login", next=session.safe_next(next), error=""
        )

    async def login(self, request: Request) -> Response:
        fields = await session.read_form(request)
        target = session.safe_next(first(fields, "next"))
        if self.runtime.settings.no_auth:
            return RedirectResponse(target, status_code=303)
        token = first(fields, "token").strip()
        info = await authenticate_token(self.runtime.db, token) if token else None
        if info is None:
            return self.page(
                request,
                "login.html",
                who=None,
                page="login",
                status=401,
                next=target,
                error="That token is unknown or revoked. Check it and try again.",
            )
        previous = request.cookies.get(SESSION_COOKIE)
        if previous and (old := await find_session(self.runtime.db, previous)) is not None:
            await end_session(self.runtime.db, old.id)
        ttl_s = self.runtime.settings.session_ttl_s
        opened = await open_session(self.runtime.db, info.id, ttl_s)
        response = RedirectResponse(target, status_code=303)
        session.set_session_cookie(request, response, opened, ttl_s)
        log.info("web login by %s (%s)", info.name, info.role.value)
        return response

    async def logout(self, request: Request) -> Response:
        """Ends the session's row, so the cookie is refused even where a copy of it survives."""
        response = RedirectResponse("/login", status_code=303)
        try:
            await session.principal(request)  # the session whose CSRF token the form carries
        except PageDenied:  # already ended or expired: nothing is left to end
            session.clear_session_cookie(response)
            return response
        await session.read_form(request)
        if (current := session_of(request)) is not None:
            await end_session(self.runtime.db, current.id)
        session.clear_session_cookie(response)
        return response


def _by_type(definition: WorkflowDefinition[Any]) -> tuple[bool, str]:
    """Plan & Review first (the default), then the others by name."""
    return definition.type != "plan_review", definition.title


def _form_field(field: Any) -> str:
    """The form field an :class:`InvalidInput` from the service is about."""
    name = str(field or "")
    if name.startswith("agents.planner"):
        return "planner"
    if name.startswith("agents.implementer"):
        return "implementer"
    if name.startswith("agents"):
        return "reviewers"
    if name in FORM_FIELDS:
        return name
    if name.startswith("deadline."):
        return "default_action" if name.endswith("default_action") else "deadline_after"
    return "form"


def _page_route(web: Web) -> type[APIRoute]:
    """A route class that turns every failure of a page into a readable answer."""

    class PageRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                try:
                    return await handler(request)
                except PageDenied as exc:
                    if exc.status == 401 and not _wants_json(request):
                        return RedirectResponse(session.login_url(request), status_code=303)
                    return web.error_page(request, exc.status, exc.message)
                except BadForm as exc:
                    return web.error_page(request, exc.status, exc.message)
                except OrchestraError as exc:
                    return web.error_page(request, status_of(exc), exc.message)
                except RequestValidationError as exc:
                    problems = "; ".join(str(e.get("msg", "")) for e in exc.errors()[:3])
                    return web.error_page(request, 400, f"bad request: {problems}")
                except Exception:
                    log.exception("page %s failed", request.url.path)
                    return web.error_page(
                        request, 500, "Something went wrong on the server (it has been logged)."
                    )

            return guarded

    return PageRoute


def build_router(web: Web) -> APIRouter:
    router = APIRouter(route_class=_page_route(web), include_in_schema=False)
    routes: list[tuple[str, str, Callable[..., Awaitable[Response]]]] = [
        ("GET", "/", web.workflows),
        ("GET", "/workflows/new", web.new_workflow_form),  # before /workflows/{id}
        ("POST", "/workflows/new", web.create_workflow),
        ("GET", "/workflows/{workflow_id}", web.workflow),
        ("GET", "/checkpoints/{checkpoint_id}/panel", web.checkpoint_panel),
        ("POST", "/checkpoints/{checkpoint_id}/resolve", web.resolve),
        ("GET", "/inbox", web.inbox),
        ("POST", "/inbox/resolve", web.resolve_batch),
        ("POST", "/checkpoints/{checkpoint_id}/snooze", web.snooze),
        ("POST", "/preview", web.preview),
        ("GET", "/d/{token}", web.decision_link),
        ("GET", "/login", web.login_form),
        ("POST", "/login", web.login),
        ("POST", "/logout", web.logout),
    ]
    for method, path, endpoint in routes:
        router.add_api_route(path, endpoint, methods=[method], response_class=HTMLResponse)
    return router


def mount(app: FastAPI, runtime: Runtime) -> None:
    web = Web(runtime)
    app.state.web = web
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(build_router(web))
