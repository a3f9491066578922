"""A local fake model server speaking OpenAI chat-completions streaming and Anthropic
Messages streaming, for the HTTP adapters' tests.

The first path segment picks the behaviour, so one server serves every case:
``{base}/<mode>/v1/chat/completions``, ``{base}/<mode>/v1/messages``,
``{base}/<mode>/v1/models``. Modes:

- ``ok``: a normal streamed answer;
- ``429-once``: HTTP 429 (``Retry-After: 0``) on the first request, then ``ok``;
- ``500-always``: HTTP 500 every time;
- ``401``: HTTP 401 with an API error body;
- ``reset-once``: the first connection is closed without an answer;
- ``overloaded-once`` (Anthropic): the first stream breaks with ``overloaded_error``;
- ``truncated-once``: the first stream stops before its end marker;
- ``hang``: no answer until the server stops.

A prompt containing ``REVIEW_JSON`` gets a JSON review as its answer. Every
request is kept in ``requests`` for the tests to inspect.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANSWER_PIECES = ["Hello from ", "the fake model.", "\nSecond line."]
REVIEW = {"verdict": "approve", "summary": "Fine.", "issues": []}
OPENAI_USAGE = {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}
ANTHROPIC_INPUT = {
    "input_tokens": 25,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 5,
}
ANTHROPIC_OUTPUT_TOKENS = 12


class FakeModelServer:
    """Serve on 127.0.0.1 on a free port, in a background thread."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def openai_base(self, mode: str = "ok") -> str:
        return f"{self.url}/{mode}/v1"

    def anthropic_base(self, mode: str = "ok") -> str:
        return f"{self.url}/{mode}"

    def start(self) -> FakeModelServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def count(self, mode: str) -> int:
        """Record one more request in ``mode``; return how many there were before."""
        with self.lock:
            seen = self.counts[mode]
            self.counts[mode] += 1
            return seen


def _handler_for(server: FakeModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet in tests
            return

        def do_GET(self) -> None:
            mode, _, rest = self.path.lstrip("/").partition("/")
            server.requests.append({"method": "GET", "path": self.path, "headers": self._headers()})
            if mode == "401":
                self._error(401, "authentication_error", "invalid x-api-key")
            elif rest == "v1/models":
                self._json(200, {"object": "list", "data": [{"id": "fake-model"}]})
            else:
                self._error(404, "not_found_error", "no such path")

        def do_POST(self) -> None:
            mode, _, rest = self.path.lstrip("/").partition("/")
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            server.requests.append(
                {"method": "POST", "path": self.path, "headers": self._headers(), "body": body}
            )
            first = server.count(mode) == 0
            if mode == "hang":
                server.stopping.wait(30)
                return
            if mode == "reset-once" and first:
                self.close_connection = True
                return
            if mode == "429-once" and first:
                self._error(429, "rate_limit_error", "slow down", {"Retry-After": "0"})
                return
            if mode == "500-always":
                self._error(500, "api_error", "internal trouble")
                return
            if mode == "401":
                self._error(401, "authentication_error", "invalid x-api-key")
                return
            broken = first and mode in ("truncated-once", "overloaded-once")
            if rest == "v1/chat/completions":
                self._openai(body, truncated=broken)
            elif rest == "v1/messages":
                self._anthropic(body, broken=broken, overloaded=mode == "overloaded-once")
            else:
                self._error(404, "not_found_error", "no such path")

        def _headers(self) -> dict[str, str]:
            return {key.lower(): value for key, value in self.headers.items()}

        def _json(self, status: int, payload: object, extra: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _error(
            self, status: int, kind: str, message: str, extra: dict[str, str] | None = None
        ) -> None:
            self._json(
                status, {"type": "error", "error": {"type": kind, "message": message}}, extra
            )

        def _start_stream(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.end_headers()

        def _send(self, data: object, event: str | None = None) -> None:
            text = data if isinstance(data, str) else json.dumps(data)
            head = f"event: {event}\n" if event else ""
            self.wfile.write(f"{head}data: {text}\n\n".encode())
            self.wfile.flush()

        def _pieces(self, body: dict[str, Any]) -> list[str]:
            messages = body.get("messages") or [{}]
            if "REVIEW_JSON" in str(messages[-1].get("content", "")):
                return [json.dumps(REVIEW)]
            return ANSWER_PIECES

        def _openai(self, body: dict[str, Any], truncated: bool) -> None:
            self._start_stream()
            base = {
                "id": "chatcmpl-fake1",
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": body.get("model"),
            }
            self._send(
                {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": ""},
                            "finish_reason": None,
                        }
                    ],
                }
            )
            for piece in self._pieces(body):
                self._send(
                    {
                        **base,
                        "choices": [
                            {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                        ],
                    }
                )
                if truncated:
                    return
            self._send({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            if (body.get("stream_options") or {}).get("include_usage"):
                self._send({**base, "choices": [], "usage": OPENAI_USAGE})
            self._send("[DONE]")

        def _anthropic(self, body: dict[str, Any], broken: bool, overloaded: bool) -> None:
            self._start_stream()
            message = {
                "id": "msg_fake1",
                "type": "message",
                "role": "assistant",
                "model": body.get("model"),
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {**ANTHROPIC_INPUT, "output_tokens": 1},
            }
            self._send({"type": "message_start", "message": message}, "message_start")
            if broken and overloaded:
                self._send(
                    {
                        "type": "error",
                        "error": {"type": "overloaded_error", "message": "Overloaded"},
                    },
                    "error",
                )
                return
            self._send(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            )
            self._send({"type": "ping"}, "ping")
            for piece in self._pieces(body):
                self._send(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                    "content_block_delta",
                )
                if broken:
                    return
            self._send({"type": "content_block_stop", "index": 0}, "content_block_stop")
            self._send(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": ANTHROPIC_OUTPUT_TOKENS},
                },
                "message_delta",
            )
            self._send({"type": "message_stop"}, "message_stop")

    return Handler
