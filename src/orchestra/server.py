"""Running Orchestra as a process: the HTTP server (with its embedded worker) or a
worker alone.

``orchestra serve`` and ``orchestra worker`` call :func:`run_server` and
:func:`run_worker`; ``python -m orchestra.server`` does the same without the
CLI (tests and benchmarks start servers this way). Serving without tokens is
allowed only on loopback, and only when asked for.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import re
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType

import uvicorn

from orchestra.api.boundary import default_allowed_hosts, is_wildcard
from orchestra.api.hub import EventHub
from orchestra.api.streams import StreamSettings
from orchestra.app import create_app
from orchestra.config import Settings, load_settings
from orchestra.domain.errors import InvalidInput, OrchestraError
from orchestra.notifications.delivery import Notifier
from orchestra.runtime import Runtime, open_runtime
from orchestra.store.tokens import list_tokens

log = logging.getLogger(__name__)

#: Seconds open requests get to finish once shutdown starts (live streams end at once).
HTTP_GRACE_S = 10
HOW_TO_CREATE_A_TOKEN = "orchestra token create --name NAME --role admin"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_binding(settings: Settings) -> None:
    """Refuse to serve without authentication anywhere but loopback."""
    if settings.no_auth and not is_loopback(settings.host):
        raise InvalidInput(
            f"refusing to serve without authentication on {settings.host}: anyone who can "
            f"reach it could run agents in your workspaces. Create a token with "
            f"`{HOW_TO_CREATE_A_TOKEN}` and start without --no-auth, or bind to 127.0.0.1.",
            details={"field": "no_auth"},
        )


#: A credential-looking query parameter (``?token=…``): no route takes one, but a
#: client may still send it, and the access log must not keep it.
_SECRET_QUERY = re.compile(r"([?&](?:token|access_token|api_key|key)=)[^&\s]*", re.IGNORECASE)


class RedactSecrets(logging.Filter):
    """Blanks credential-looking query values in uvicorn's request log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = _SECRET_QUERY.sub(r"\1[redacted]", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                _SECRET_QUERY.sub(r"\1[redacted]", a) if isinstance(a, str) else a
                for a in record.args
            )
        return True


#: Uvicorn logs HTTP requests on the first, WebSocket handshakes on the second.
_REQUEST_LOGGERS = ("uvicorn.access", "uvicorn.error")


def install_log_redaction() -> None:
    for name in _REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())


class _Server(uvicorn.Server):
    """Uvicorn, ending the live streams first so a graceful shutdown is not held up by
    clients that would otherwise stay connected for ever.

    Uvicorn re-raises the signal that stopped it once it has shut down, which for
    SIGTERM kills the process before the runtime closes (exit -15). SIGTERM is the
    normal way to stop a service: once shut down gracefully, the process closes the
    runtime and exits 0. Ctrl-C (SIGINT) still ends as an interrupt (exit 130).
    """

    def __init__(self, config: uvicorn.Config, hub: EventHub) -> None:
        super().__init__(config)
        self._hub = hub
        self._interrupted = False

    async def shutdown(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._hub.close_streams()
        await super().shutdown(sockets)  # type: ignore[arg-type]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._interrupted = self._interrupted or sig == signal.SIGINT
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread only (tests run servers in threads)
            return
        stopping = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in stopping}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self._interrupted:
            signal.raise_signal(signal.SIGINT)


def run_server(settings: Settings, *, stream_settings: StreamSettings | None = None) -> None:
    """Serve the API, the streams, the web UI and (unless ``settings.worker`` is off)
    the embedded worker until SIGINT/SIGTERM, then shut down gracefully."""
    check_binding(settings)
    runtime = open_runtime(settings)
    try:
        app = create_app(runtime, run_worker=settings.worker, stream_settings=stream_settings)
        if not settings.no_auth and settings.allowed_hosts is None and is_wildcard(settings.host):
            log.warning(
                "listening on %s, but only requests to %s are answered; set allowed_hosts "
                "(ORCHESTRA_ALLOWED_HOSTS) to the names clients use to reach this server",
                settings.host,
                ", ".join(default_allowed_hosts(settings.host)),
            )
        if not settings.no_auth and not asyncio.run(list_tokens(runtime.db)):
            log.warning(
                "no API tokens exist yet, so every request will be refused; create one with: %s",
                HOW_TO_CREATE_A_TOKEN,
            )
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level.lower(),
            timeout_graceful_shutdown=HTTP_GRACE_S,
            lifespan="on",
            # Named, not "auto": without the websockets package the server must fail to
            # start, not answer the WebSocket route with a 404.
            ws="websockets-sansio",
        )
        server = _Server(config, app.state.hub)
        install_log_redaction()  # after uvicorn.Config, which configures its loggers
        server.run()
    finally:
        runtime.close()


def run_worker(settings: Settings) -> None:
    """Run the engine alone (no HTTP) until SIGINT/SIGTERM, then stop gracefully."""
    runtime = open_runtime(settings)
    try:
        notifier = Notifier.from_settings(runtime.db, settings)
        asyncio.run(_work(runtime, notifier))
    finally:
        runtime.close()


async def _work(runtime: Runtime, notifier: Notifier | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        runtime.db.start_listening(loop)
        jobs = [runtime.service.engine.run(stop)]
        if notifier is not None:
            jobs.append(notifier.run(stop))
        await asyncio.gather(*jobs)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m orchestra.server [serve|worker] [--host …] …`` (no CLI needed)."""
    parser = argparse.ArgumentParser(prog="python -m orchestra.server")
    parser.add_argument("command", nargs="?", choices=["serve", "worker"], default="serve")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--database-url")
    parser.add_argument("--data-dir")
    parser.add_argument("--no-auth", action="store_true", default=None)
    parser.add_argument("--no-worker", action="store_true")
    parser.add_argument("--log-level")
    parser.add_argument("--sse-keepalive", type=float, default=StreamSettings.keepalive_s)
    parser.add_argument("--sse-poll", type=float, default=StreamSettings.poll_s)
    args = parser.parse_args(argv)
    try:
        settings = load_settings(
            host=args.host,
            port=args.port,
            database_url=args.database_url,
            data_dir=args.data_dir,
            no_auth=args.no_auth,
            worker=False if args.no_worker else None,
            log_level=args.log_level,
        )
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        if args.command == "worker":
            run_worker(settings)
        else:
            streams = StreamSettings(keepalive_s=args.sse_keepalive, poll_s=args.sse_poll)
            run_server(settings, stream_settings=streams)
    except OrchestraError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
