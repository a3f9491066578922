"""A real local HTTP receiver of webhooks (a ``http.server`` thread), for the
notification tests: it records every request and answers from a script.

``answers`` is consumed one per request: an int is the status to answer, ``"hang"``
holds the request until :meth:`Receiver.release` (or the server closes), ``"huge"``
is a 500 with a 64 MB body; when it runs out every request gets 200.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def delivery(self) -> str:
        return self.headers["x-orchestra-delivery"]

    def signed_by(self, secret: str) -> bool:
        """The check a receiver makes (the README's five lines)."""
        ts = self.headers["x-orchestra-timestamp"]
        mac = hmac.new(secret.encode(), ts.encode() + b"." + self.body, hashlib.sha256)
        return hmac.compare_digest(
            "sha256=" + mac.hexdigest(), self.headers.get("x-orchestra-signature", "")
        )


@dataclass
class Receiver:
    url: str = ""
    answers: list[int | str] = field(default_factory=list)
    #: Every request that arrived (hanging ones included), in order.
    received: list[Received] = field(default_factory=list)
    arrived: int = 0
    #: How much of a ``"huge"`` answer the client took before it hung up.
    sent_bytes: int = 0
    _release: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def release(self) -> None:
        self._release.set()

    def by_delivery(self) -> Counter[str]:
        return Counter(r.delivery for r in self.received)

    def _arrived(self, got: Received) -> int | str:
        """Record a request (every one, answered or not); what to answer it."""
        with self._lock:
            self.arrived += 1
            self.received.append(got)
            return self.answers.pop(0) if self.answers else 200


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            got = Received({k.lower(): v for k, v in self.headers.items()}, body)
            answer = receiver._arrived(got)
            if answer == "huge":  # a 500 with 64 MB of answer: how much of it went out?
                self.send_response(500)
                self.send_header("Content-Length", str(64 << 20))
                self.end_headers()
                with contextlib.suppress(OSError):
                    for _ in range(1024):
                        self.wfile.write(b"x" * (64 << 10))
                        receiver.sent_bytes += 64 << 10
                return
            if answer == "hang":
                receiver._release.wait(60)
                with contextlib.suppress(OSError):
                    self.send_response(200)
                    self.end_headers()
                return
            self.send_response(int(answer))
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"no" if int(answer) >= 300 else b"ok")

        def log_message(self, *_: Any) -> None:
            pass

    return Handler


@contextlib.contextmanager
def receiving(answers: list[int | str] | None = None) -> Iterator[Receiver]:
    receiver = Receiver(answers=list(answers or []))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release()
        server.shutdown()
        server.server_close()
