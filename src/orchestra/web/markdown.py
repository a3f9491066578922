"""Markdown from agents, rendered safely: raw HTML is escaped, never passed through.

Agent output is untrusted. ``markdown-it-py`` (already a dependency of ``rich``)
runs with HTML disabled, so ``<script>`` in a plan comes out as text; links are
limited to http(s), mailto and in-page or relative targets, and images are off
(an agent must not make the browser fetch things). The page's Content Security
Policy is a second fence behind this one. Parsing is quadratic on crafted
input, so pages render through :mod:`orchestra.web.render_pool` (worker
processes, a deadline), and the template filter only looks up what was
rendered there (:func:`markdown_filter`).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from functools import cache
from urllib.parse import urlsplit

from markdown_it import MarkdownIt
from markupsafe import Markup, escape

_SAFE_SCHEMES = frozenset({"http", "https", "mailto"})


def _safe_link(url: str) -> bool:
    scheme = urlsplit(url.strip()).scheme.lower()
    return scheme == "" or scheme in _SAFE_SCHEMES


@cache
def _parser() -> MarkdownIt:
    md = MarkdownIt("js-default", {"html": False, "linkify": False, "typographer": False})
    md.disable("image")
    md.validateLink = _safe_link  # type: ignore[method-assign]
    return md


#: Agent headings start below the page's own (``#`` becomes ``<h4>``), keeping the outline.
HEADING_OFFSET = 3


def render_markdown(text: str | None) -> Markup:
    """HTML for ``text`` (escaped wherever it is not markdown structure)."""
    if not text:
        return Markup("")
    md = _parser()
    tokens = md.parse(text)
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(6, int(token.tag[1:]) + HEADING_OFFSET)}"
    return Markup(md.renderer.render(tokens, md.options, {}))  # markdown-it escapes; html is off


#: The markdown of the page being rendered: text → HTML, filled by the page handler.
#: ``None`` while collecting: the filter then records what the template asks for.
RENDERED: ContextVar[Mapping[str, Markup] | set[str] | None] = ContextVar(
    "rendered_markdown", default=None
)


def markdown_filter(text: str | None) -> Markup:
    """The template's ``|markdown``: what the handler rendered off the loop for ``text``.

    While the handler collects (a ``set`` in :data:`RENDERED`) the text is
    recorded; a text nobody rendered is shown escaped, never rendered here.
    """
    if not text:
        return Markup("")
    rendered = RENDERED.get()
    if isinstance(rendered, set):
        rendered.add(text)
        return Markup("")
    if rendered is not None and text in rendered:
        return rendered[text]
    return Markup('<pre class="plain">{}</pre>').format(escape(text))
