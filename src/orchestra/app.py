"""The application factory: one FastAPI app around one :class:`Runtime` — the HTTP
API (:mod:`orchestra.api`) and the web pages (:mod:`orchestra.web`) together.

Its lifespan binds the database doorbell to the server's loop, starts the
event hub and (unless told not to) the embedded worker; on shutdown it ends
the live streams, stops the worker gracefully (in-flight steps finish within
the grace period or are left for recovery) and closes the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import orchestra
from orchestra import web
from orchestra.api import ops, routes, streams
from orchestra.api.boundary import BoundaryMiddleware
from orchestra.api.errors import BodyLimitMiddleware, install_error_handlers, log_task_failure
from orchestra.api.hub import EventHub
from orchestra.api.ops import Metrics
from orchestra.api.streams import StreamSettings
from orchestra.notifications.delivery import Notifier
from orchestra.runtime import Runtime


def create_app(
    runtime: Runtime, *, run_worker: bool = True, stream_settings: StreamSettings | None = None
) -> FastAPI:
    settings = stream_settings or StreamSettings()
    hub = EventHub(
        runtime.db,
        poll_s=settings.poll_s,
        max_streams=runtime.settings.max_streams,
        max_streams_per_principal=runtime.settings.max_streams_per_principal,
    )

    # Here, not in the lifespan: a bad [[notify]] secret stops the start with its message.
    notifier = Notifier.from_settings(runtime.db, runtime.settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runtime.db.start_listening(asyncio.get_running_loop())
        await hub.start()
        stop = asyncio.Event()
        background: list[asyncio.Task[None]] = []
        if run_worker:
            engine = runtime.service.engine
            worker = asyncio.create_task(engine.run(stop), name="embedded-worker")
            worker.add_done_callback(log_task_failure("the embedded worker stopped with an error"))
            background.append(worker)
        if notifier is not None:  # with or without the worker: this process commits too
            notifying = asyncio.create_task(notifier.run(stop), name="notifier")
            notifying.add_done_callback(log_task_failure("the notifier stopped with an error"))
            background.append(notifying)
        try:
            yield
        finally:
            hub.close_streams()
            stop.set()
            if background:
                await asyncio.wait(background)
            await hub.stop()
            web.close_web(app)
            runtime.close()

    app = FastAPI(
        title="Orchestra",
        version=orchestra.__version__,
        description="Durable workflows for AI coding agents, with human checkpoints.",
        lifespan=lifespan,
        # Swagger UI and ReDoc load their code from a CDN, outside the pages' CSP: off.
        # The schema is served by ops.openapi_schema, behind the API's own auth.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.runtime = runtime
    app.state.hub = hub
    app.state.metrics = Metrics(hub)
    app.state.stream_settings = settings
    app.add_middleware(BodyLimitMiddleware, max_bytes=runtime.settings.max_body_bytes)
    # Added last, so it runs first: a foreign Host or Origin reaches nothing else.
    app.add_middleware(BoundaryMiddleware, settings=runtime.settings)
    install_error_handlers(app)
    app.include_router(routes.router)
    app.include_router(streams.router)
    app.include_router(ops.router)
    web.mount_web(app, runtime)
    return app
