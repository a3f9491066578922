"""The OpenAI-compatible and Anthropic adapters against a local fake model server
speaking both streaming formats."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from agent_helpers import Progress, model_server

from orchestra.agents.base import Adapter, AgentFailure, AgentRequest
from orchestra.agents.registry import create_adapter
from orchestra.domain.errors import InvalidInput

ANSWER = "".join(model_server.ANSWER_PIECES)
FAST_RETRY = {"retry_base_s": 0.01, "max_attempts": 3}


def openai(server: Any, mode: str = "ok", **options: Any) -> Adapter:
    return create_adapter(
        "openai",
        {"base_url": server.openai_base(mode), "model": "fake-gpt", **FAST_RETRY, **options},
    )


def anthropic(server: Any, mode: str = "ok", **options: Any) -> Adapter:
    return create_adapter(
        "anthropic",
        {"base_url": server.anthropic_base(mode), "model": "claude-fake", **FAST_RETRY, **options},
    )


def request(prompt: str = "Plan the change.", **fields: Any) -> AgentRequest:
    return AgentRequest(
        prompt=prompt, job="reviewer", timeout_s=fields.pop("timeout_s", 30), **fields
    )


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")


async def test_openai_streams_content_and_usage(server: Any, progress: Progress) -> None:
    result = await openai(server, system="You review plans.").run(request(), progress)
    assert result.content == ANSWER
    assert result.tokens_in == 42
    assert result.tokens_out == 7
    assert result.cost_usd is None
    assert result.meta["stop_reason"] == "stop"
    assert progress.kinds("text") == ["Hello from", "the fake model.", "Second line."]
    sent = server.requests[-1]
    assert sent["path"] == "/ok/v1/chat/completions"
    assert sent["headers"]["authorization"] == "Bearer sk-test-openai"
    assert sent["body"]["stream"] is True
    assert sent["body"]["stream_options"] == {"include_usage": True}
    assert sent["body"]["messages"] == [
        {"role": "system", "content": "You review plans."},
        {"role": "user", "content": "Plan the change."},
    ]


async def test_anthropic_streams_content_and_usage(server: Any, progress: Progress) -> None:
    result = await anthropic(server, max_tokens=1000).run(request(), progress)
    assert result.content == ANSWER
    assert result.tokens_in == 25 + 0 + 5
    assert result.tokens_out == model_server.ANTHROPIC_OUTPUT_TOKENS
    assert result.session_id == "msg_fake1"
    assert result.meta["stop_reason"] == "end_turn"
    sent = server.requests[-1]
    assert sent["path"] == "/ok/v1/messages"
    assert sent["headers"]["x-api-key"] == "sk-ant-test"
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert sent["body"]["max_tokens"] == 1000
    assert sent["body"]["stream"] is True


async def test_cost_comes_from_configured_prices(server: Any, progress: Progress) -> None:
    adapter = anthropic(server, usd_per_mtok_in=3.0, usd_per_mtok_out=15.0)
    result = await adapter.run(request(), progress)
    assert result.cost_usd == pytest.approx((30 * 3.0 + 12 * 15.0) / 1e6)


@pytest.mark.parametrize("make", [openai, anthropic])
async def test_review_json_is_parsed_when_a_schema_is_asked(
    make: Any, server: Any, progress: Progress
) -> None:
    result = await make(server).run(
        request("Review this. REVIEW_JSON", output_schema={"type": "object"}), progress
    )
    assert result.structured == model_server.REVIEW


@pytest.mark.parametrize("make", [openai, anthropic])
@pytest.mark.parametrize("mode", ["429-once", "reset-once", "truncated-once"])
async def test_transient_failures_are_retried(
    make: Any, mode: str, server: Any, progress: Progress
) -> None:
    result = await make(server, mode).run(request(), progress)
    assert result.content == ANSWER
    assert result.meta["attempts"] == 2
    assert server.counts[mode] == 2
    assert len(progress.kinds("status")) == 1


async def test_anthropic_overloaded_stream_is_retried(server: Any, progress: Progress) -> None:
    result = await anthropic(server, "overloaded-once").run(request(), progress)
    assert result.content == ANSWER
    assert server.counts["overloaded-once"] == 2


@pytest.mark.parametrize("make", [openai, anthropic])
async def test_persistent_5xx_gives_http_error_after_all_attempts(
    make: Any, server: Any, progress: Progress
) -> None:
    with pytest.raises(AgentFailure) as caught:
        await make(server, "500-always").run(request(), progress)
    assert caught.value.reason == "http_error"
    assert "HTTP 500" in caught.value.message
    assert "internal trouble" in caught.value.message
    assert "3 attempts" in caught.value.message
    assert server.counts["500-always"] == 3


@pytest.mark.parametrize("make", [openai, anthropic])
async def test_a_refused_key_is_not_retried(make: Any, server: Any, progress: Progress) -> None:
    with pytest.raises(AgentFailure) as caught:
        await make(server, "401").run(request(), progress)
    assert caught.value.reason == "http_error"
    assert "HTTP 401" in caught.value.message
    assert "invalid x-api-key" in caught.value.message
    assert not caught.value.retryable
    assert server.counts["401"] == 1


async def test_a_hanging_endpoint_times_out(server: Any, progress: Progress) -> None:
    with pytest.raises(AgentFailure) as caught:
        await openai(server, "hang").run(request(timeout_s=1), progress)
    assert caught.value.reason == "timeout"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_closed_port_is_retried_then_reported(progress: Progress) -> None:
    adapter = create_adapter(
        "openai",
        {"base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "m", **FAST_RETRY},
    )
    with pytest.raises(AgentFailure) as caught:
        await adapter.run(request(), progress)
    assert caught.value.reason == "http_error"
    assert "ConnectError" in caught.value.message
    assert len(progress.kinds("status")) == 2


async def test_anthropic_without_a_key_says_which_variable(
    server: Any, progress: Progress, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    adapter = anthropic(server)
    with pytest.raises(AgentFailure) as caught:
        await adapter.run(request(), progress)
    assert "ANTHROPIC_API_KEY" in caught.value.message
    assert server.requests == []
    assert not (await adapter.check()).ok


async def test_openai_works_without_a_key_for_local_servers(
    server: Any, progress: Progress, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    result = await openai(server, api_key_env="LOCAL_LLM_KEY").run(request(), progress)
    assert result.content == ANSWER
    assert "authorization" not in server.requests[-1]["headers"]


@pytest.mark.parametrize("make", [openai, anthropic])
async def test_check_reports_reachability(make: Any, server: Any) -> None:
    ok = await make(server).check()
    assert ok.ok
    assert "reachable" in ok.detail
    refused = await make(server, "401").check()
    assert not refused.ok
    assert "HTTP 401" in refused.detail
    assert server.requests[0]["method"] == "GET"


async def test_check_of_an_unreachable_endpoint() -> None:
    adapter = create_adapter(
        "openai", {"base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "m"}
    )
    check = await adapter.check()
    assert not check.ok
    assert "unreachable" in check.detail


def test_model_is_required() -> None:
    with pytest.raises(InvalidInput, match="model"):
        create_adapter("openai", {"base_url": "http://localhost:1/v1"})
    with pytest.raises(InvalidInput, match="max_tokns"):
        create_adapter("anthropic", {"model": "m", "max_tokns": 5})
