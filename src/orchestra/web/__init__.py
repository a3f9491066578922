"""The web dashboard: server-rendered pages with a small script for live updates.

:func:`mount_web` is called by :func:`orchestra.app.create_app`; the pages
read through the service layer like every other interface.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from orchestra.runtime import Runtime


def mount_web(app: FastAPI, runtime: Runtime) -> None:
    """Serve the dashboard's pages and static files from ``app``."""
    from orchestra.web.pages import mount

    mount(app, runtime)


def close_web(app: FastAPI) -> None:
    """Stop what the pages started (the render workers); the app's shutdown calls it."""
    web = getattr(app.state, "web", None)
    if web is not None:
        web.renders.close()


__all__ = ["close_web", "mount_web"]
