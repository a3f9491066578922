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


__all__ = ["mount_web"]
