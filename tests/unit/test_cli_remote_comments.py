"""With ``--server``, line comments travel in the Decision JSON the API takes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from orchestra.cli.remote import RemoteBackend
from orchestra.domain.models import Checkpoint, Decision, LineComment
from tests.unit.test_cli_code_view import code_checkpoint, real_change


async def test_the_remote_backend_sends_the_comments(tmp_path: Path) -> None:
    cp: Checkpoint = code_checkpoint(real_change(tmp_path, {"app.py": "x\n"}))
    sent: list[dict[str, object]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json=cp.model_dump(mode="json"))

    backend = RemoteBackend("http://orchestra.test", "t0ken")
    backend.client = httpx.AsyncClient(
        base_url=backend.where,
        headers=backend.client.headers,
        transport=httpx.MockTransport(answer),
    )
    comments = [LineComment(file="a:1:b.py", line=3, body="two\nlines")]
    try:
        await backend.resolve(cp.id, Decision(action="request_changes", comments=comments))
    finally:
        await backend.aclose()
    assert sent[0]["action"] == "request_changes"
    assert sent[0]["comments"] == [{"file": "a:1:b.py", "line": 3, "body": "two\nlines"}]
