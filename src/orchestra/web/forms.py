"""A checkpoint's resolve form, read into a :class:`Decision` — the one parser for it.

The page's form posts here with and without the script (the script sends the same
fields, with an ``Idempotency-Key`` header). Line comments arrive as repeated
``comment_file`` / ``comment_line`` / ``comment_body`` fields, one triple per
comment in order; an empty body drops its triple (an unused comment box), anything
else wrong is a :class:`BadForm` naming the field, and nothing is resolved.
Browsers send a textarea's newlines as CRLF: they are read back as LF, so a note
or comment reaches the agent as typed.
"""

from __future__ import annotations

from pydantic import ValidationError

from orchestra.domain.models import MAX_LINE_COMMENTS, Decision, LineComment
from orchestra.web.session import BadForm, first

#: The most fields a resolve form may carry: every comment's three and a few more.
MAX_RESOLVE_FIELDS = 3 * MAX_LINE_COMMENTS + 60
COMMENT_FIELDS = ("comment_file", "comment_line", "comment_body")
#: An action's numbers are posted as ``input.<action>.<name>``.
INPUT_PREFIX = "input."


def _text(value: str) -> str:
    return value.replace("\r\n", "\n")


def comments_from_form(fields: dict[str, list[str]]) -> list[LineComment] | None:
    """The line comments posted, zipped in order (None when there are none)."""
    files, lines, bodies = (fields.get(name, []) for name in COMMENT_FIELDS)
    if not len(files) == len(lines) == len(bodies):
        raise BadForm(
            422,
            f"line comments came incomplete ({len(files)} files, {len(lines)} lines, "
            f"{len(bodies)} comments); reload the page and add them again",
        )
    comments: list[LineComment] = []
    for n, (path, raw_line, body) in enumerate(zip(files, lines, bodies, strict=True), 1):
        if not body.strip():
            continue
        if not path.strip():
            raise BadForm(422, f"comment {n}: say which file it is about (comment_file)")
        try:
            line = int(raw_line.strip())
        except ValueError:
            raise BadForm(
                422, f"comment {n} on {path}: the line must be a whole number (comment_line)"
            ) from None
        if line < 1:
            raise BadForm(422, f"comment {n} on {path}: lines start at 1 (comment_line)")
        if len(comments) == MAX_LINE_COMMENTS:
            raise BadForm(422, f"at most {MAX_LINE_COMMENTS} line comments at once (comments)")
        try:
            comments.append(LineComment(file=path, line=line, body=_text(body)))
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem.get("loc", ()))
            raise BadForm(
                422, f"comment {n} on {path}: {problem.get('msg', 'invalid')} ({where})"
            ) from None
    return comments or None


def inputs_from_form(fields: dict[str, list[str]], action: str) -> dict[str, float] | None:
    """The numbers typed for ``action`` (blank ones left out); the engine checks them."""
    prefix = f"{INPUT_PREFIX}{action}."
    given: dict[str, float] = {}
    for name, values in fields.items():
        if not name.startswith(prefix) or not values or not values[0].strip():
            continue
        try:
            given[name.removeprefix(prefix)] = float(values[0])
        except ValueError:
            raise BadForm(422, f"{name.removeprefix(prefix)} must be a number") from None
    return given or None


def decision_from_form(fields: dict[str, list[str]]) -> Decision:
    """The decision a resolve form posted (an absent ``edited_content``: not edited)."""
    action = first(fields, "action").strip()
    if not action:
        raise BadForm(422, "choose an action (action)")
    edited = fields.get("edited_content")
    notes = _text(first(fields, "notes"))
    inputs, comments = inputs_from_form(fields, action), comments_from_form(fields)
    try:
        return Decision(
            action=action,
            edited_content=_text(edited[0]) if edited else None,
            notes=notes if notes.strip() else None,
            inputs=inputs,
            comments=comments,
        )
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem.get("loc", ()))
        raise BadForm(422, f"{where}: {problem.get('msg', 'invalid')}") from None
