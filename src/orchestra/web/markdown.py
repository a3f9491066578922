"""Markdown from agents, rendered safely: raw HTML is escaped, never passed through.

Agent output is untrusted. ``markdown-it-py`` (already a dependency of ``rich``)
runs with HTML disabled, so ``<script>`` in a plan comes out as text; links are
limited to http(s), mailto and in-page or relative targets, and images are off
(an agent must not make the browser fetch things). The page's Content Security
Policy is a second fence behind this one.
"""

from __future__ import annotations

from functools import cache
from urllib.parse import urlsplit

from markdown_it import MarkdownIt
from markupsafe import Markup

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
