"""A local model endpoint for the REAL agent CLIs (claude, codex, gemini).

It speaks what the CLIs send, as found by running them against it:

- Anthropic Messages ``POST …/v1/messages`` (streaming and not; ``tool_use``
  blocks, so claude's ``--json-schema`` StructuredOutput call works) and
  ``…/v1/messages/count_tokens``;
- OpenAI Responses ``POST …/v1/responses`` (streaming SSE as codex reads it).
  ``text.format.schema`` is checked with OpenAI's strict-mode rules (every
  object ``additionalProperties: false`` and every property in ``required``,
  recursively); a schema that breaks them gets OpenAI's 400
  ``invalid_json_schema``, as the real API answers;
- OpenAI chat completions ``POST …/v1/chat/completions``;
- Gemini ``POST …/v1beta/models/<model>:streamGenerateContent?alt=sse``.

The first path segment is the scenario, so one endpoint serves every test:
``http://127.0.0.1:PORT/<scenario>`` is the base URL a CLI is given.
Scenarios: ``ok`` (a plan-like answer; a review when a schema or a review
prompt asks for one), ``500``, ``429`` (every request), ``hang`` (no answer
until the endpoint stops). Every request is logged (method, path, headers,
body) in ``requests`` so tests assert what a CLI sent.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANSWER = "PLAN\n1. Read the code.\n2. Change it.\n3. Test it."
REVIEW = {
    "verdict": "approve_with_changes",
    "summary": "Sound plan; one gap.",
    "confidence": 0.8,
    "issues": [
        {
            "severity": "medium",
            "category": None,
            "title": "No rollback step",
            "detail": "Say how to undo the change.",
        }
    ],
    "recommendations": ["Add a rollback step."],
    "questions": None,
}
PLAN_FILE_TEXT = "# The plan\n\n1. Read the code.\n2. Change it.\n3. Test it.\n"


def strict_schema_problem(schema: Any, where: str = "") -> str | None:
    """What breaks OpenAI's strict structured-output rules in ``schema``, or ``None``."""
    if isinstance(schema, list):
        for i, item in enumerate(schema):
            problem = strict_schema_problem(item, f"{where}[{i}]")
            if problem:
                return problem
        return None
    if not isinstance(schema, dict):
        return None
    types = schema.get("type")
    is_object = types == "object" or (isinstance(types, list) and "object" in types)
    if is_object or "properties" in schema:
        if schema.get("additionalProperties") is not False:
            return (
                f"In context=({where or ''}), 'additionalProperties' is required to be "
                "supplied and to be false."
            )
        properties = schema.get("properties") or {}
        required = schema.get("required") or []
        missing = [name for name in properties if name not in required]
        if missing:
            return (
                f"In context=({where or ''}), 'required' is required to be supplied and to be "
                f"an array including every key in properties. Missing '{missing[0]}'."
            )
    for key, value in schema.items():
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            for name, sub in value.items():
                problem = strict_schema_problem(sub, f"{where}, '{name}'".lstrip(", "))
                if problem:
                    return problem
        elif key in ("items", "anyOf", "oneOf", "allOf", "prefixItems"):
            problem = strict_schema_problem(value, f"{where}, {key}".lstrip(", "))
            if problem:
                return problem
    return None


class ModelEndpoint:
    """Serve on 127.0.0.1 on a free port, in a background thread."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
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

    def base(self, scenario: str) -> str:
        """The base URL a CLI is given for ``scenario`` (a unique tag may follow: ``ok-t1``)."""
        return f"{self.url}/{scenario}"

    def start(self) -> ModelEndpoint:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def log(self, prefix: str) -> list[dict[str, Any]]:
        """The requests whose path starts with ``/prefix/``."""
        with self.lock:
            return [r for r in self.requests if r["path"].startswith(f"/{prefix}/")]


def _scenario(path: str) -> str:
    """``/500-t3/v1/messages`` → ``500``: the tag after a dash only keeps tests apart."""
    return path.lstrip("/").split("/", 1)[0].split("-", 1)[0]


def _anthropic_text(body: dict[str, Any]) -> str:
    """All the text a Messages request carries (system and messages)."""
    return json.dumps([body.get("system"), body.get("messages")])


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return json.dumps(content)
    return ""


def _handler_for(server: ModelEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet in tests
            return

        def _record(self, body: Any) -> None:
            entry = {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
                "time": time.monotonic(),
            }
            with server.lock:
                server.requests.append(entry)

        def do_HEAD(self) -> None:
            self._record(None)
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            self._record(None)
            if self.path.rstrip("/").endswith("/models"):
                self._json(200, {"object": "list", "data": [{"id": "fake-model"}], "models": []})
            else:
                self._json(404, {"error": {"message": "not found", "type": "not_found"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else {}
            except json.JSONDecodeError:
                body = {"_raw": raw.decode("utf-8", "replace")}
            self._record(body)
            scenario = _scenario(self.path)
            path = self.path.split("?", 1)[0]
            if scenario == "hang":
                server.stopping.wait(120)
                self.close_connection = True
                return
            if scenario in ("500", "429"):
                self._api_error(int(scenario), path)
                return
            if path.endswith("/v1/messages/count_tokens"):
                self._json(200, {"input_tokens": 100})
            elif path.endswith("/v1/messages"):
                self._anthropic(body)
            elif path.endswith("/v1/responses"):
                self._responses(body)
            elif path.endswith("/v1/chat/completions"):
                self._chat(body)
            elif ":streamGenerateContent" in path or ":generateContent" in path:
                self._gemini(body, stream=":streamGenerateContent" in path)
            elif ":countTokens" in path:
                self._json(200, {"totalTokens": 100})
            else:
                self._json(404, {"error": {"message": f"no such path {path}"}})

        # -- plumbing ------------------------------------------------------------------

        def _json(self, status: int, payload: object, extra: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _api_error(self, status: int, path: str) -> None:
            retry = {"retry-after": "0"} if status == 429 else {}
            if "/v1beta/" in path:
                name = "RESOURCE_EXHAUSTED" if status == 429 else "INTERNAL"
                payload: object = {
                    "error": {"code": status, "message": f"fake {name}", "status": name}
                }
            elif path.endswith("/v1/messages"):
                kind = "rate_limit_error" if status == 429 else "api_error"
                payload = {"type": "error", "error": {"type": kind, "message": f"fake {kind}"}}
            else:
                kind = "rate_limit_exceeded" if status == 429 else "server_error"
                payload = {"error": {"message": f"fake {kind}", "type": kind, "code": kind}}
            self._json(status, payload, retry)

        def _start_stream(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("connection", "close")
            self.end_headers()
            self.close_connection = True

        def _send(self, data: object, event: str | None = None) -> None:
            text = data if isinstance(data, str) else json.dumps(data)
            head = f"event: {event}\n" if event else ""
            self.wfile.write(f"{head}data: {text}\n\n".encode())
            self.wfile.flush()

        # -- Anthropic -------------------------------------------------------------------

        def _anthropic_blocks(self, body: dict[str, Any]) -> list[dict[str, Any]]:
            """What the model "does": a StructuredOutput call when offered, the plan
            file written and ExitPlanMode in plan mode, else the answer text."""
            messages = body.get("messages") or []
            tools = {t.get("name") for t in body.get("tools") or [] if isinstance(t, dict)}
            last = messages[-1] if messages else {}
            content = last.get("content") if isinstance(last, dict) else None
            after_tool = isinstance(content, list) and any(
                isinstance(b, dict) and b.get("type") == "tool_result" for b in content
            )
            if "StructuredOutput" in tools and not after_tool:
                return [_tool_use("StructuredOutput", REVIEW)]
            plan_path = re.search(
                r"(/[^\s\"'`]*?/\.claude/plans/[^\s\"'`]+?\.md)", _anthropic_text(body)
            )
            if plan_path and "Write" in tools:
                written = any(
                    isinstance(b, dict) and b.get("type") == "tool_use" and b.get("name") == "Write"
                    for m in messages
                    if isinstance(m, dict) and m.get("role") == "assistant"
                    for b in (m.get("content") if isinstance(m.get("content"), list) else [])
                )
                if not written:
                    return [
                        _tool_use(
                            "Write", {"file_path": plan_path.group(1), "content": PLAN_FILE_TEXT}
                        )
                    ]
                if "ExitPlanMode" in tools and not any(
                    "ExitPlanMode" in json.dumps(m)
                    for m in messages
                    if m.get("role") == "assistant"
                ):
                    return [_tool_use("ExitPlanMode", {})]
                return [{"type": "text", "text": f"I wrote the plan to {plan_path.group(1)}."}]
            if after_tool:
                return [{"type": "text", "text": "Done."}]
            return [{"type": "text", "text": self._answer_for(_last_user_text(messages))}]

        def _answer_for(self, prompt: str) -> str:
            # A reviewer prompt carries the review schema (maybe JSON-escaped once more).
            if '"verdict"' in prompt or '\\"verdict\\"' in prompt:
                return json.dumps(REVIEW)
            return ANSWER

        def _anthropic(self, body: dict[str, Any]) -> None:
            blocks = self._anthropic_blocks(body)
            stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
            usage = {
                "input_tokens": 25,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 5,
                "output_tokens": 12,
            }
            message = {
                "id": f"msg_fake{len(server.requests)}",
                "type": "message",
                "role": "assistant",
                "model": body.get("model"),
                "content": blocks,
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": usage,
            }
            if not body.get("stream"):
                self._json(200, message)
                return
            self._start_stream()
            self._send(
                {
                    "type": "message_start",
                    "message": {**message, "content": [], "stop_reason": None},
                },
                "message_start",
            )
            for index, block in enumerate(blocks):
                if block["type"] == "text":
                    start = {"type": "text", "text": ""}
                    delta = {"type": "text_delta", "text": block["text"]}
                else:
                    start = {**block, "input": {}}
                    delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
                self._send(
                    {"type": "content_block_start", "index": index, "content_block": start},
                    "content_block_start",
                )
                self._send(
                    {"type": "content_block_delta", "index": index, "delta": delta},
                    "content_block_delta",
                )
                self._send({"type": "content_block_stop", "index": index}, "content_block_stop")
            self._send(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": 12},
                },
                "message_delta",
            )
            self._send({"type": "message_stop"}, "message_stop")

        # -- OpenAI --------------------------------------------------------------------

        def _responses(self, body: dict[str, Any]) -> None:
            text_format = (body.get("text") or {}).get("format") or {}
            if text_format.get("type") == "json_schema":
                problem = strict_schema_problem(text_format.get("schema"))
                if text_format.get("strict") and problem:
                    name = text_format.get("name", "schema")
                    self._json(
                        400,
                        {
                            "error": {
                                "message": f"Invalid schema for response_format '{name}': "
                                + problem,
                                "type": "invalid_request_error",
                                "param": "text.format.schema",
                                "code": "invalid_json_schema",
                            }
                        },
                    )
                    return
                answer = json.dumps(REVIEW)
            else:
                answer = self._answer_for(json.dumps(body.get("input")))
            rid = f"resp_fake{len(server.requests)}"
            item = {
                "type": "message",
                "id": f"msg_{rid}",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": answer, "annotations": []}],
            }
            usage = {
                "input_tokens": 30,
                "input_tokens_details": {"cached_tokens": 4},
                "output_tokens": 9,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 39,
            }
            response = {"id": rid, "object": "response", "status": "in_progress", "output": []}
            self._start_stream()
            self._send({"type": "response.created", "response": response}, "response.created")
            self._send(
                {"type": "response.output_item.added", "output_index": 0, "item": item},
                "response.output_item.added",
            )
            self._send(
                {
                    "type": "response.output_text.delta",
                    "item_id": item["id"],
                    "output_index": 0,
                    "content_index": 0,
                    "delta": answer,
                },
                "response.output_text.delta",
            )
            self._send(
                {"type": "response.output_item.done", "output_index": 0, "item": item},
                "response.output_item.done",
            )
            self._send(
                {
                    "type": "response.completed",
                    "response": {
                        **response,
                        "status": "completed",
                        "output": [item],
                        "usage": usage,
                    },
                },
                "response.completed",
            )

        def _chat(self, body: dict[str, Any]) -> None:
            answer = self._answer_for(_last_user_text(body.get("messages") or []))
            base = {"id": "chatcmpl-fake", "created": 1700000000, "model": body.get("model")}
            usage = {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}
            if not body.get("stream"):
                self._json(
                    200,
                    {
                        **base,
                        "object": "chat.completion",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": answer},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": usage,
                    },
                )
                return
            self._start_stream()
            chunk = {**base, "object": "chat.completion.chunk"}
            self._send(
                {
                    **chunk,
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": answer}}],
                }
            )
            self._send({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            self._send({**chunk, "choices": [], "usage": usage})
            self._send("[DONE]")

        # -- Gemini --------------------------------------------------------------------

        def _gemini(self, body: dict[str, Any], stream: bool) -> None:
            contents = body.get("contents") or []
            answer = self._answer_for(json.dumps(contents[-1:] if contents else []))
            payload = {
                "candidates": [
                    {
                        "content": {"parts": [{"text": answer}], "role": "model"},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": {
                    "promptTokenCount": 40,
                    "candidatesTokenCount": 8,
                    "totalTokenCount": 48,
                },
                "modelVersion": "gemini-fake",
            }
            if not stream:
                self._json(200, payload)
                return
            self._start_stream()
            self.wfile.write(f"data: {json.dumps(payload)}\r\n\r\n".encode())
            self.wfile.flush()

    return Handler


def _tool_use(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": f"toolu_fake_{name}_{time.monotonic_ns()}",
        "name": name,
        "input": arguments,
    }
