"""Model endpoints over HTTP: any OpenAI-compatible chat-completions API, and Anthropic's
Messages API, both streamed.

We talk to them with httpx directly: we already depend on it, and the official
``openai`` and ``anthropic`` SDKs would add two heavy dependencies for one
endpoint each.

Transient errors (HTTP 429 and 5xx, a reset or refused connection, a stream
that breaks off, Anthropic's ``overloaded_error`` event) are retried with
exponential backoff, honouring ``Retry-After``, before the run fails with
``http_error``. The whole run, retries included, is bounded by the request's
timeout.

Common options: ``base_url``, ``model`` (required), ``api_key_env``,
``system`` (a system prompt), ``max_attempts`` (default 4), ``retry_base_s``
(default 1.0, doubled each retry), ``connect_timeout_s`` (default 10),
``usd_per_mtok_in`` / ``usd_per_mtok_out`` (prices per million tokens, to
report a cost; endpoints do not). Anthropic also takes ``max_tokens``
(default 8192).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx

from orchestra.agents.base import (
    JSON,
    AgentCheck,
    AgentFailure,
    AgentRequest,
    AgentResult,
    ProgressSink,
)
from orchestra.agents.subprocess_runner import (
    as_dict,
    as_int,
    check_options,
    clip,
    opt_number,
    opt_str,
    structured_from_text,
    sum_ints,
)
from orchestra.domain.errors import InvalidInput
from orchestra.domain.untrusted import UntrustedJSON, loads_bounded

log = logging.getLogger(__name__)

#: Longest pause between two attempts, whatever ``Retry-After`` says.
MAX_RETRY_DELAY_S = 60.0
#: How much of an error body is kept in a failure message.
ERROR_BODY_CHARS = 500
CHECK_TIMEOUT_S = 10.0

_COMMON_OPTIONS = frozenset(
    {
        "base_url",
        "model",
        "api_key_env",
        "system",
        "max_attempts",
        "retry_base_s",
        "connect_timeout_s",
        "usd_per_mtok_in",
        "usd_per_mtok_out",
    }
)
_TRANSIENT_NETWORK_ERRORS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
    httpx.PoolTimeout,
)


class TransientError(Exception):
    """A failure worth another attempt; ``retry_after`` is the server's wish, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: str


async def iter_sse(lines: AsyncIterator[str]) -> AsyncIterator[SseEvent]:
    """Server-sent events from a stream of lines (``event:``/``data:`` fields, blank-line
    separated); comments and other fields are skipped."""
    name = ""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield SseEvent(name or "message", "\n".join(data))
            name, data = "", []
            continue
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "event":
            name = value
        elif key == "data":
            data.append(value)
    if data:
        yield SseEvent(name or "message", "\n".join(data))


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _error_text(body: bytes) -> str:
    """The message inside an API error body, else the body itself, shortened."""
    text = body.decode("utf-8", errors="replace")
    try:
        error = as_dict(loads_bounded(text)).get("error")
    except UntrustedJSON:
        error = None
    if isinstance(error, dict) and error.get("message"):
        text = str(error["message"])
    elif isinstance(error, str):
        text = error
    return " ".join(text.split())[:ERROR_BODY_CHARS] or "(empty body)"


@dataclass
class StreamState:
    """What one streamed answer has delivered so far."""

    progress: ProgressSink
    parts: list[str] = field(default_factory=list)
    tokens_in: int | None = None
    tokens_out: int | None = None
    #: The end marker (``[DONE]``, ``message_stop``) was seen.
    finished: bool = False
    #: Why the model stopped (``stop``, ``end_turn``, ``max_tokens``…), once it said.
    stop_reason: str | None = None
    meta: JSON = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Whether the answer is whole: a stream cut before this is worth a retry."""
        return self.finished or self.stop_reason is not None

    def text(self, delta: object) -> None:
        if isinstance(delta, str) and delta:
            self.parts.append(delta)
            shown = clip(delta)
            if shown:
                self.progress("text", shown)


#: Variables that hold Orchestra's own secrets (tokens, the database URL): never a key.
_FORBIDDEN_KEY_PREFIXES = ("ORCHESTRA_",)
_FORBIDDEN_KEY_NAMES = frozenset({"DATABASE_URL"})


def _key_env(adapter: str, name: str) -> str:
    """The variable the API key is read from; one of Orchestra's own is refused, so an
    endpoint never receives e.g. ``ORCHESTRA_DATABASE_URL`` as a bearer token."""
    upper = name.upper()
    if upper.startswith(_FORBIDDEN_KEY_PREFIXES) or upper in _FORBIDDEN_KEY_NAMES:
        raise InvalidInput(
            f"option 'api_key_env' of the {adapter} adapter must not name {name!r}: "
            "ORCHESTRA_* and DATABASE_URL hold Orchestra's own secrets; "
            "use a variable of its own, e.g. OPENAI_API_KEY",
            details={"adapter": adapter, "field": "api_key_env"},
        )
    if not name or not name.replace("_", "").isalnum():
        raise InvalidInput(
            f"option 'api_key_env' of the {adapter} adapter must be an environment "
            f"variable name (letters, digits, _), not {name!r}",
            details={"adapter": adapter, "field": "api_key_env"},
        )
    return name


class HttpAdapter:
    """Shared by both endpoints: options, retries, timeouts, cost; subclasses say the
    URL, headers, body and how to read one streamed event."""

    name: ClassVar[str]
    default_base_url: ClassVar[str | None]
    default_key_env: ClassVar[str]
    key_required: ClassVar[bool]
    extra_options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, options: Mapping[str, Any]) -> None:
        check_options(self.name, options, _COMMON_OPTIONS | self.extra_options)
        base_url = opt_str(self.name, options, "base_url") or self.default_base_url
        model = opt_str(self.name, options, "model")
        if not base_url:
            raise InvalidInput(f"the {self.name} adapter needs a `base_url` option")
        if not model:
            raise InvalidInput(f"the {self.name} adapter needs a `model` option")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.key_env = _key_env(
            self.name, opt_str(self.name, options, "api_key_env") or self.default_key_env
        )
        self.system = opt_str(self.name, options, "system")
        self.max_attempts = max(1, int(opt_number(self.name, options, "max_attempts", 4)))
        self.retry_base_s = opt_number(self.name, options, "retry_base_s", 1.0)
        self.connect_timeout_s = opt_number(self.name, options, "connect_timeout_s", 10.0)
        self.price_in = opt_number(self.name, options, "usd_per_mtok_in", 0.0)
        self.price_out = opt_number(self.name, options, "usd_per_mtok_out", 0.0)

    # -- what differs per endpoint --

    def url(self) -> str:
        raise NotImplementedError

    def models_url(self) -> str:
        raise NotImplementedError

    def headers(self, key: str | None) -> dict[str, str]:
        raise NotImplementedError

    def body(self, request: AgentRequest) -> JSON:
        raise NotImplementedError

    def on_event(self, event: SseEvent, state: StreamState) -> None:
        """Read one SSE event into ``state``; raise ``TransientError`` or ``AgentFailure``."""
        raise NotImplementedError

    # -- shared --

    def _key(self) -> str | None:
        key = os.environ.get(self.key_env) or None
        if key is None and self.key_required:
            raise AgentFailure(
                "not_installed",
                f"{self.key_env} is not set; export the API key or set the agent's "
                "`api_key_env` option",
                retryable=False,
            )
        return key

    def _cost(self, state: StreamState) -> float | None:
        if not (self.price_in or self.price_out):
            return None
        return (
            (state.tokens_in or 0) * self.price_in + (state.tokens_out or 0) * self.price_out
        ) / 1e6

    async def run(self, request: AgentRequest, progress: ProgressSink) -> AgentResult:
        started = time.monotonic()
        timeout = httpx.Timeout(request.timeout_s, connect=self.connect_timeout_s)
        try:
            key = self._key()
            async with (
                asyncio.timeout(request.timeout_s),
                httpx.AsyncClient(timeout=timeout) as client,
            ):
                state = await self._with_retries(client, request, key, progress)
        except TimeoutError:
            log.warning("%s: no answer within %gs", self.name, request.timeout_s)
            raise AgentFailure(
                "timeout", f"{self.url()} gave no complete answer within {request.timeout_s:g}s"
            ) from None
        except AgentFailure as exc:
            log.warning("%s failed: %s: %s", self.name, exc.reason, exc.message)
            raise
        content = "".join(state.parts)
        return AgentResult(
            content=content,
            structured=structured_from_text(content) if request.output_schema is not None else None,
            tokens_in=state.tokens_in,
            tokens_out=state.tokens_out,
            cost_usd=self._cost(state),
            duration_ms=int((time.monotonic() - started) * 1000),
            session_id=state.meta.get("id"),
            meta={**state.meta, "stop_reason": state.stop_reason},
        )

    async def _with_retries(
        self,
        client: httpx.AsyncClient,
        request: AgentRequest,
        key: str | None,
        progress: ProgressSink,
    ) -> StreamState:
        for attempt in range(1, self.max_attempts + 1):
            try:
                state = await self._attempt(client, request, key, progress)
            except TransientError as exc:
                if attempt == self.max_attempts:
                    raise AgentFailure(
                        "http_error",
                        f"{exc} (gave up after {attempt} attempts)",
                        meta={"attempts": attempt},
                    ) from exc
                delay = (
                    exc.retry_after
                    if exc.retry_after is not None
                    else (self.retry_base_s * 2 ** (attempt - 1))
                )
                delay = min(delay, MAX_RETRY_DELAY_S)
                log.info(
                    "%s: %s; attempt %d of %d in %.2fs",
                    self.name,
                    exc,
                    attempt + 1,
                    self.max_attempts,
                    delay,
                )
                progress("status", clip(f"{exc}; retrying in {delay:.1f}s"))
                await asyncio.sleep(delay)
            else:
                state.meta["attempts"] = attempt
                return state
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _attempt(
        self,
        client: httpx.AsyncClient,
        request: AgentRequest,
        key: str | None,
        progress: ProgressSink,
    ) -> StreamState:
        url = self.url()
        state = StreamState(progress)
        try:
            async with client.stream(
                "POST", url, json=self.body(request), headers=self.headers(key)
            ) as response:
                if response.status_code != httpx.codes.OK:
                    await self._refuse(response)
                async for event in iter_sse(response.aiter_lines()):
                    self.on_event(event, state)
                    if state.finished:
                        break
        except _TRANSIENT_NETWORK_ERRORS as exc:
            raise TransientError(f"{url}: {type(exc).__name__}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise AgentFailure(
                "http_error", f"{url}: {type(exc).__name__}: {exc}", retryable=False
            ) from exc
        if not state.complete:
            raise TransientError(f"{url}: the stream ended before the answer was complete")
        return state

    async def _refuse(self, response: httpx.Response) -> None:
        status = response.status_code
        message = (
            f"{response.request.url} answered HTTP {status}: {_error_text(await response.aread())}"
        )
        if status in (408, 409, 429) or status >= 500:
            raise TransientError(message, _retry_after(response))
        raise AgentFailure("http_error", message, retryable=False, meta={"status": status})

    async def check(self) -> AgentCheck:
        """GET the models list: cheap, and it proves both the address and the key."""
        url = self.models_url()
        try:
            key = self._key()
            async with httpx.AsyncClient(timeout=CHECK_TIMEOUT_S) as client:
                response = await client.get(url, headers=self.headers(key))
        except AgentFailure as exc:
            return AgentCheck(ok=False, detail=exc.message)
        except httpx.HTTPError as exc:
            return AgentCheck(ok=False, detail=f"{url} unreachable: {type(exc).__name__}: {exc}")
        if response.status_code in (401, 403):
            return AgentCheck(
                ok=False,
                detail=f"{url} reachable but refused the key (HTTP {response.status_code}); "
                f"check {self.key_env}",
            )
        if response.status_code != httpx.codes.OK:
            return AgentCheck(ok=False, detail=f"{url} answered HTTP {response.status_code}")
        return AgentCheck(ok=True, detail=f"{url} reachable (model {self.model})")


def _parse_event(event: SseEvent, source: str) -> JSON:
    try:
        value = loads_bounded(event.data)
    except UntrustedJSON as exc:
        raise AgentFailure(
            "bad_output", f"{source} sent an event we refuse ({str(exc)[:200]}): {event.data[:200]}"
        ) from None
    return as_dict(value)


class OpenAIAdapter(HttpAdapter):
    """Any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, Ollama…).

    ``base_url`` includes ``/v1``; the key (``OPENAI_API_KEY`` by default) is
    optional, since local servers often need none.
    """

    name = "openai"
    default_base_url = "https://api.openai.com/v1"
    default_key_env = "OPENAI_API_KEY"
    key_required = False

    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def models_url(self) -> str:
        return f"{self.base_url}/models"

    def headers(self, key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"} if key else {}

    def body(self, request: AgentRequest) -> JSON:
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": request.prompt})
        return {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    def on_event(self, event: SseEvent, state: StreamState) -> None:
        if event.data.strip() == "[DONE]":
            state.finished = True
            return
        chunk = _parse_event(event, self.name)
        if chunk.get("error"):
            raise AgentFailure(
                "http_error", f"{self.name} stream error: {_error_text(event.data.encode())}"
            )
        state.meta.setdefault("id", chunk.get("id"))
        state.meta.setdefault("model", chunk.get("model"))
        for choice in map(as_dict, chunk.get("choices") or []):
            state.text(as_dict(choice.get("delta")).get("content"))
            if choice.get("finish_reason"):
                state.stop_reason = str(choice["finish_reason"])
        usage = as_dict(chunk.get("usage"))
        if usage:
            state.tokens_in = as_int(usage.get("prompt_tokens"))
            state.tokens_out = as_int(usage.get("completion_tokens"))


class AnthropicAdapter(HttpAdapter):
    """Anthropic's Messages API; ``base_url`` is without ``/v1``."""

    name = "anthropic"
    default_base_url = "https://api.anthropic.com"
    default_key_env = "ANTHROPIC_API_KEY"
    key_required = True
    extra_options = frozenset({"max_tokens"})
    version = "2023-06-01"
    #: Error events that say "try again later" rather than "this request is wrong".
    transient_errors = frozenset({"overloaded_error", "api_error", "rate_limit_error"})

    def __init__(self, options: Mapping[str, Any]) -> None:
        super().__init__(options)
        self.max_tokens = int(opt_number(self.name, options, "max_tokens", 8192))

    def url(self) -> str:
        return f"{self.base_url}/v1/messages"

    def models_url(self) -> str:
        return f"{self.base_url}/v1/models"

    def headers(self, key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": self.version}
        if key:
            headers["x-api-key"] = key
        return headers

    def body(self, request: AgentRequest) -> JSON:
        body: JSON = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "messages": [{"role": "user", "content": request.prompt}],
            "stream": True,
        }
        if self.system:
            body["system"] = self.system
        return body

    def on_event(self, event: SseEvent, state: StreamState) -> None:
        data = _parse_event(event, self.name)
        kind = data.get("type") or event.event
        if kind == "message_start":
            message = as_dict(data.get("message"))
            usage = as_dict(message.get("usage"))
            state.meta.update(id=message.get("id"), model=message.get("model"))
            state.tokens_in = sum_ints(
                usage.get(k)
                for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
            )
            state.tokens_out = as_int(usage.get("output_tokens"))
        elif kind == "content_block_delta":
            delta = as_dict(data.get("delta"))
            if delta.get("type") == "text_delta":
                state.text(delta.get("text"))
        elif kind == "message_delta":
            stop = as_dict(data.get("delta")).get("stop_reason")
            if stop:
                state.stop_reason = str(stop)
            out = as_int(as_dict(data.get("usage")).get("output_tokens"))
            state.tokens_out = out if out is not None else state.tokens_out
        elif kind == "message_stop":
            state.finished = True
        elif kind == "error":
            error = as_dict(data.get("error"))
            problem = f"{self.name} stream error {error.get('type')}: {error.get('message')}"
            if error.get("type") in self.transient_errors:
                raise TransientError(problem)
            raise AgentFailure("http_error", problem, retryable=False)
