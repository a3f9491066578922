"""Browser fixtures: a real server process and Debian's Chromium driven by Playwright.

The server is ``python -m orchestra.server`` on a free port with a fresh
database of its own, on each backend (``tests/acceptance/server.py`` starts and
always stops it); its
agents are the offline demo agent in a few configurations (one slow enough to
watch it work, one that asks for changes). Playwright never downloads a
browser here: it drives ``/usr/bin/chromium``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from tests.acceptance.server import (
    ServerProcess,
    _clean_env,
    make_tokens,
    start_server,
    wait_healthy,
)
from tests.conftest import BACKENDS, fresh_database
from tests.support.waiting import eventually_sync

from orchestra.domain.roles import Role

T = TypeVar("T")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Test artefacts (not committed); the README's copies live in docs/screenshots.
SCREENSHOTS = Path(
    os.environ.get(
        "ORCHESTRA_SCREENSHOTS", Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
    )
)
#: How long a page may take to show what the server already knows (generous for CI).
UI_TIMEOUT_MS = 20_000

AGENTS_TOML = """
[agents.demo]
adapter = "demo"

[agents.demo-slow]
adapter = "demo"
[agents.demo-slow.options]
delay_s = 3

[agents.demo-failing]
adapter = "demo"
[agents.demo-failing.options]
fail = "error"

[agents.demo-strict]
adapter = "demo"
[agents.demo-strict.options]
verdict = "request_changes"

[jobs]
planner = "demo"
reviewers = ["demo", "demo-strict", "demo"]
"""


# -- servers -----------------------------------------------------------------------


def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` in a thread of its own: Playwright's sync API keeps an event loop
    running in this one, so ``asyncio.run`` (tokens, the service) cannot run here."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args).result(timeout=60)


def prepare_data_dir(data_dir: Path) -> None:
    """A data directory with the test agents' configuration."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "orchestra.toml").write_text(AGENTS_TOML)


@contextlib.contextmanager
def database(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[str]:
    """A fresh migrated database on the backend in ``request.param``, dropped after."""
    prepare_data_dir(data_dir)
    yield from fresh_database(request, data_dir, "orchestra_w_")


@contextlib.contextmanager
def web_server(
    request: pytest.FixtureRequest, data_dir: Path, *, no_auth: bool = True
) -> Iterator[ServerProcess]:
    with database(request, data_dir) as url:
        server = start_server(url, data_dir, no_auth=no_auth)
        try:
            yield server
        finally:
            server.stop()


def restart(server: ServerProcess, data_dir: Path, timeout_s: float = 30) -> None:
    """Start ``server`` again with the same command line (same port and database)."""
    server.stop()
    with server.log_path.open("ab") as log:
        server.proc = subprocess.Popen(
            server.proc.args, stdout=log, stderr=subprocess.STDOUT, env=_clean_env({}, data_dir)
        )
    wait_healthy(server.base_url, server.proc, server.output, timeout_s)


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server without tokens (loopback, ``--no-auth``), shared by a module, on
    each backend."""
    with web_server(request, tmp_path_factory.mktemp("web")) as proc:
        yield proc


@pytest.fixture(params=BACKENDS)
def own_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[ServerProcess, Path]]:
    """A server of the test's own (for tests that stop and restart it)."""
    data_dir = tmp_path / "data"
    with web_server(request, data_dir) as proc:
        yield proc, data_dir


@pytest.fixture(params=BACKENDS)
def auth_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server with authentication on, and tokens for a reviewer and a viewer."""
    data_dir = tmp_path / "data"
    with database(request, data_dir) as url:
        tokens = off_loop(make_tokens, url, {"rita": Role.REVIEWER, "vera": Role.VIEWER})
        server = start_server(url, data_dir, no_auth=False)
        server.tokens = tokens
        try:
            yield server
        finally:
            server.stop()


# -- the browser -------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one module. Not longer: Playwright's sync API keeps an event loop
    running in this thread while it is open, which async tests elsewhere cannot share."""
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing (scripts/install-chromium installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


PageFactory = Callable[..., Any]


@pytest.fixture
def dialogs() -> list[str]:
    """The messages of the dialogs (confirmations) pages opened; each was accepted."""
    return []


@pytest.fixture
def new_page(browser: Any, dialogs: list[str]) -> Iterator[PageFactory]:
    """Open pages in fresh contexts; page errors (uncaught exceptions) fail the test."""
    contexts: list[Any] = []
    errors: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    def make(
        *, color_scheme: str = "light", width: int = 1280, height: int = 900, **kwargs: Any
    ) -> Any:
        context = browser.new_context(
            viewport={"width": width, "height": height}, color_scheme=color_scheme, **kwargs
        )
        context.set_default_timeout(UI_TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("dialog", accept)
        return page

    yield make
    for context in contexts:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def screenshot(page: Any, name: str) -> None:
    """Save a screenshot for the docs (and as a CI artefact)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 0


# -- the API, for setting scenes -------------------------------------------------------


def api(server: ServerProcess, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.base_url, headers=headers, timeout=30)


def create_workflow(server: ServerProcess, token: str | None = None, **body: Any) -> str:
    body.setdefault("name", "Add a --json flag")
    body.setdefault("prompt", "Add a --json flag to `orchestra list`.")
    with api(server, token) as client:
        r = client.post("/api/workflows", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def wait_for_checkpoint(
    server: ServerProcess, workflow_id: str, token: str | None = None, timeout_s: float = 30
) -> dict[str, Any]:
    """The workflow's pending checkpoint, once there is one."""
    with api(server, token) as client:

        def pending() -> dict[str, Any] | None:
            cp = client.get(f"/api/workflows/{workflow_id}").json().get("pending_checkpoint")
            return dict(cp) if cp else None

        return eventually_sync(pending, what=f"a checkpoint of {workflow_id}", timeout_s=timeout_s)
