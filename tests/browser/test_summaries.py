"""The one-line summary and the recommended action on the pages, in process, on both
databases: the inbox lists each checkpoint's summary, the decision panel marks the
recommended action next to its button (the button's own name unchanged)."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from orchestra.app import create_app
from orchestra.config import Settings
from orchestra.runtime import Runtime, open_runtime


@pytest.fixture
async def local(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    runtime = open_runtime(Settings(data_dir=tmp_path, database_url=db_url, no_auth=True))
    transport = httpx.ASGITransport(app=create_app(runtime, run_worker=False))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield runtime, client
    finally:
        runtime.close()


async def test_the_inbox_shows_summaries_and_the_panel_marks_the_recommendation(
    local: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = local
    wf = await runtime.service.create_workflow(name="flag", prompt="Add a <b>flag</b>")
    await runtime.service.engine.worker.run_until_idle()
    cp = (await runtime.service.get_workflow(wf.id)).pending_checkpoint
    assert cp is not None and cp.summary and cp.recommended == "approve"

    inbox = (await client.get("/inbox")).text
    assert f'<span class="inbox-summary">{html.escape(cp.summary, quote=False)}</span>' in inbox
    page = (await client.get(f"/workflows/{wf.id}")).text
    button = re.search(r'<button[^>]*data-action="approve"[^>]*>([^<]*)</button>', page)
    assert button is not None and "data-recommended" in button.group(0)
    assert button.group(1) == "Approve plan → reviewers"
    assert '<span class="recommended"' in page[button.end() : button.end() + 200]
    others = re.findall(r'<button[^>]*data-action="(?!approve")[^"]+"[^>]*>', page)
    assert others and not any("data-recommended" in b for b in others)
