"""The Jinja environment every page template is rendered in — by the server, and by
the render workers for the code under review (:mod:`orchestra.web.code_view`): the
same loader and the same escaping everywhere."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES = Path(__file__).parent / "templates"


def environment() -> Environment:
    """Autoescaping on, an undefined name an error, blocks trimmed."""
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
