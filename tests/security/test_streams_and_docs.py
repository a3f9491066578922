"""Attacks on the live streams and the docs, against a real server on both databases.

- Subscriber caps: one token could open SSE and WebSocket streams without limit
  (each one a connection, a task and a buffer). Now a cap per principal and an
  overall cap answer 429 in the error shape; closing a stream frees its slot.
- ``/docs`` and ``/redoc`` loaded JavaScript from a CDN, unauthenticated, outside
  the pages' CSP; ``/openapi.json`` was public. Now the docs are off and the schema
  needs a token that may read.
- ``websockets`` was not a declared dependency: a plain ``pip install -e .`` served
  the WebSocket route as a 404. Now it is pinned, and uvicorn is told to use it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

import orchestra.server
from orchestra.config import Settings
from tests.acceptance.server import Api, ServerProcess, module_server_fixture
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PER_PRINCIPAL = 2
TOTAL = 5
GAUGE = "orchestra_event_stream_subscribers"

server = module_server_fixture(
    env={
        "ORCHESTRA_MAX_STREAMS_PER_PRINCIPAL": str(PER_PRINCIPAL),
        "ORCHESTRA_MAX_STREAMS": str(TOTAL),
    }
)


def _auth(server: ServerProcess, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.tokens[who]}"}


async def _open_sse(
    stack: contextlib.AsyncExitStack, client: httpx.AsyncClient, path: str, who: dict[str, str]
) -> httpx.Response:
    """Open a stream and keep it open until ``stack`` closes (a 429 is read and closed)."""
    response = await stack.enter_async_context(client.stream("GET", path, headers=who))
    if response.status_code != 200:
        await response.aread()
    return response


async def _open_ws(
    stack: contextlib.AsyncExitStack, server: ServerProcess, wid: str, who: dict[str, str]
) -> ClientConnection:
    url = server.base_url.replace("http://", "ws://") + f"/ws/workflows/{wid}"
    return await stack.enter_async_context(connect(url, additional_headers=who))


def _refused(response: httpx.Response, scope: str) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "too_many_streams"
    assert error["details"] == {
        "limit": PER_PRINCIPAL if scope == "principal" else TOTAL,
        "scope": scope,
    }
    assert "max_streams" in error["message"]


async def _open_count(api: Api) -> float:
    r = await api.client.get("/metrics")
    for line in r.text.splitlines():
        if line.startswith(GAUGE + " "):
            return float(line.split()[1])
    raise AssertionError(f"{GAUGE} missing from /metrics")


async def _all_closed(api: Api) -> None:
    async def closed() -> bool | None:
        return True if await _open_count(api) == 0 else None

    await eventually(closed, what="every stream to be closed on the server", timeout_s=10)


@contextlib.asynccontextmanager
async def _streams() -> AsyncIterator[tuple[contextlib.AsyncExitStack, httpx.AsyncClient]]:
    async with contextlib.AsyncExitStack() as stack, httpx.AsyncClient(timeout=30) as client:
        yield stack, client
        await stack.aclose()


async def test_streams_are_capped_per_principal_and_overall(server: ServerProcess) -> None:
    base = server.base_url
    async with Api(base, server.tokens["ana"]) as ana:
        wid = (await ana.create_workflow())["id"]
        await _all_closed(ana)
        async with _streams() as (stack, client):
            vic, root, ana_h = _auth(server, "vic"), _auth(server, "root"), _auth(server, "ana")
            # vic: SSE on both routes, then a third stream of any kind is refused
            assert (
                await _open_sse(stack, client, f"{base}/api/events/stream", vic)
            ).status_code == 200
            workflow_stream = f"{base}/api/workflows/{wid}/events/stream"
            assert (await _open_sse(stack, client, workflow_stream, vic)).status_code == 200
            _refused(await _open_sse(stack, client, f"{base}/api/events/stream", vic), "principal")
            _refused(await _open_sse(stack, client, workflow_stream, vic), "principal")
            with pytest.raises(InvalidStatus) as ws_refused:
                await _open_ws(stack, server, wid, vic)
            assert ws_refused.value.response.status_code == 429
            body = json.loads(ws_refused.value.response.body or b"{}")
            assert body["error"]["code"] == "too_many_streams"
            # another token has its own allowance: ana opens two (one a WebSocket)
            await _open_ws(stack, server, wid, ana_h)
            assert (await _open_sse(stack, client, workflow_stream, ana_h)).status_code == 200
            # root's first fits (5 in all); the next one is over the server's cap
            assert (
                await _open_sse(stack, client, f"{base}/api/events/stream", root)
            ).status_code == 200
            assert await _open_count(ana) == TOTAL
            _refused(await _open_sse(stack, client, f"{base}/api/events/stream", root), "server")
            with pytest.raises(InvalidStatus) as full:
                await _open_ws(stack, server, wid, root)
            assert full.value.response.status_code == 429
            # the refusals held nothing
            assert await _open_count(ana) == TOTAL
        await _all_closed(ana)


async def test_closing_a_stream_frees_its_slot(server: ServerProcess) -> None:
    base = server.base_url
    vic = _auth(server, "vic")
    async with Api(base, server.tokens["ana"]) as ana:
        wid = (await ana.create_workflow())["id"]
        await _all_closed(ana)
        async with _streams() as (stack, client):
            kept = await _open_sse(stack, client, f"{base}/api/events/stream", vic)
            assert kept.status_code == 200
            async with client.stream("GET", f"{base}/api/events/stream", headers=vic) as r:
                assert r.status_code == 200
                _refused(
                    await _open_sse(stack, client, f"{base}/api/events/stream", vic), "principal"
                )
            # closed by the client: the server notices and frees the slot

            async def reopened() -> httpx.Response | None:
                r = await _open_sse(stack, client, f"{base}/api/events/stream", vic)
                return r if r.status_code == 200 else None  # kept open: it counts again

            await eventually(
                reopened, what="the closed stream's slot to be free", timeout_s=10, every_s=0.2
            )
            _refused(await _open_sse(stack, client, f"{base}/api/events/stream", vic), "principal")
        await _all_closed(ana)
        # A WebSocket closed by its client frees its slot the same way.
        async with _streams() as (stack, client):
            ws = await _open_ws(stack, server, wid, vic)
            await _open_ws(stack, server, wid, vic)
            _refused(await _open_sse(stack, client, f"{base}/api/events/stream", vic), "principal")
            await ws.close()

            async def freed() -> bool | None:
                async with contextlib.AsyncExitStack() as probe:
                    r = await _open_sse(probe, client, f"{base}/api/events/stream", vic)
                    return True if r.status_code == 200 else None

            await eventually(
                freed, what="the closed WebSocket's slot to be free", timeout_s=10, every_s=0.2
            )
        await _all_closed(ana)


async def test_docs_are_off_and_the_schema_needs_a_token(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as anonymous:
        for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            r = await anonymous.get(path, headers=_auth(server, "root"))
            assert r.status_code == 404, (path, r.text)
            assert "cdn" not in r.text.lower()
        r = await anonymous.get("/openapi.json")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        r = await anonymous.get("/openapi.json", headers=_auth(server, "vic"))
        assert r.status_code == 200
        schema = r.json()
        assert "/api/workflows" in schema["paths"]
        assert "/openapi.json" not in schema["paths"]


def test_websockets_is_a_declared_pinned_dependency() -> None:
    installed = importlib.metadata.version("websockets")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert f"websockets=={installed}" in project["dependencies"]
    constraints = (ROOT / "constraints.txt").read_text().splitlines()
    assert f"websockets=={installed}" in constraints


def test_the_server_configures_uvicorn_with_a_websocket_protocol(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ws="auto"`` without the package silently serves the route as a 404; the server
    names its protocol, so uvicorn loads it (and would fail to start without it)."""
    seen: list[uvicorn.Config] = []

    class Captured:
        def __init__(self, config: uvicorn.Config, _hub: Any) -> None:
            seen.append(config)

        def run(self) -> None:
            pass

    monkeypatch.setattr(orchestra.server, "_Server", Captured)
    settings = Settings(data_dir=tmp_path, no_auth=True, worker=False)
    orchestra.server.run_server(settings)
    (config,) = seen
    assert config.ws != "auto"
    config.load()
    assert config.ws_protocol_class is not None


async def test_a_fresh_server_completes_a_websocket_handshake(server: ServerProcess) -> None:
    async with Api(server.base_url, server.tokens["ana"]) as ana:
        wid = (await ana.create_workflow())["id"]
        await _all_closed(ana)
        url = server.base_url.replace("http://", "ws://") + f"/ws/workflows/{wid}"
        async with connect(url, additional_headers=_auth(server, "vic")) as ws:
            first = json.loads(await ws.recv())
            assert first["workflow_id"] == wid
        await _all_closed(ana)
