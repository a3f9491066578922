"""Inbox triage from the terminal, as real processes: ``orchestra snooze`` /
``unsnooze`` and the inbox's filters, on the local database (both backends) and
against a server, with the exit codes of the other commands."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestra.domain.models import Decision
from orchestra.engine.runner import Worker
from orchestra.service import Orchestra
from orchestra.workflows.plan_review import PLAN_READY
from tests.acceptance.server import Api, ServerProcess, module_server
from tests.acceptance.test_cli_local import as_json, cli_env, ok, orchestra
from tests.conftest import BACKENDS

pytestmark = pytest.mark.slow


async def _pending(service: Orchestra, worker: Worker, *names: str) -> list[str]:
    ids = [(await service.create_workflow(name=n, prompt="Add a flag")).id for n in names]
    await worker.run_until_idle()
    found = []
    for wid in ids:
        cp = (await service.get_workflow(wid)).pending_checkpoint
        assert cp is not None
        found.append(cp.id)
    return found


def _ids(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [c["id"] for c in as_json(result)["items"]]


async def test_snooze_hides_until_unsnoozed_and_the_inbox_filters(
    service: Orchestra, worker: Worker, db_url: str, tmp_path: Path
) -> None:
    one, two = await _pending(service, worker, "alpha", "beta")
    done = ok(orchestra(tmp_path, db_url, "snooze", one[:8], "--for", "2h"))
    assert f"{one[:8]} snoozed until" in done.stdout and "unsnooze" in done.stdout
    assert (await service.get_checkpoint(one)).snoozed_until is not None

    assert _ids(orchestra(tmp_path, db_url, "inbox", "--json")) == [two]
    assert _ids(orchestra(tmp_path, db_url, "inbox", "--snoozed", "--json")) == [one]
    table = ok(orchestra(tmp_path, db_url, "inbox", "--snoozed")).stdout
    assert "Back in" in table and "alpha" in table and "beta" not in table
    narrow = cli_env(tmp_path, COLUMNS="80")
    for args in (("inbox", "--snoozed"), ("inbox",), ("snooze", two[:8], "--for", "1m")):
        out = ok(orchestra(tmp_path, db_url, *args, env=narrow)).stdout
        assert all(len(line) <= 80 for line in out.splitlines()), out
    ok(orchestra(tmp_path, db_url, "unsnooze", two[:8]))

    wf_two = (await service.get_checkpoint(two)).workflow_id
    by_wf = orchestra(tmp_path, db_url, "inbox", "--workflow", wf_two[:6], "--json")
    assert _ids(by_wf) == [two]
    assert _ids(orchestra(tmp_path, db_url, "inbox", "--step", PLAN_READY, "--json")) == [two]
    assert _ids(orchestra(tmp_path, db_url, "inbox", "--older-than", "1d", "--json")) == []

    ok(orchestra(tmp_path, db_url, "unsnooze", one[:8]))
    assert set(_ids(orchestra(tmp_path, db_url, "inbox", "--json"))) == {one, two}


async def test_bad_triage_input_exits_2_and_a_resolved_checkpoint_exits_4(
    service: Orchestra, worker: Worker, db_url: str, tmp_path: Path
) -> None:
    [one] = await _pending(service, worker, "alpha")
    neither = orchestra(tmp_path, db_url, "snooze", one)
    assert neither.returncode == 2 and "--for" in neither.stderr
    both = orchestra(tmp_path, db_url, "snooze", one, "--for", "1h", "--until", "2030-01-01T00:00Z")
    assert both.returncode == 2
    too_long = orchestra(tmp_path, db_url, "snooze", one, "--for", "40d")
    assert too_long.returncode == 2 and "30 days" in too_long.stderr
    past = orchestra(tmp_path, db_url, "snooze", one, "--until", "2020-01-01T00:00:00+00:00")
    assert past.returncode == 2 and "has passed" in past.stderr
    step = orchestra(tmp_path, db_url, "inbox", "--step", "nope")
    assert step.returncode == 2 and PLAN_READY in step.stderr
    age = orchestra(tmp_path, db_url, "inbox", "--older-than", "yesterday")
    assert age.returncode == 2 and "a number and a unit" in age.stderr
    assert (await service.get_checkpoint(one)).snoozed_until is None  # nothing written

    await service.resolve(one, Decision(action="cancel"), actor="bo")
    resolved = orchestra(tmp_path, db_url, "snooze", one, "--for", "1h")
    assert resolved.returncode == 4 and "resolved by bo" in resolved.stderr
    assert orchestra(tmp_path, db_url, "unsnooze", one).returncode == 4
    assert orchestra(tmp_path, db_url, "snooze", "f" * 32, "--for", "1h").returncode == 3


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    yield from module_server(request, tmp_path_factory)


async def test_remote_snooze_unsnooze_and_filters(server: ServerProcess, tmp_path: Path) -> None:
    async with Api(server.base_url, server.tokens["ana"]) as api:
        created = await api.create_workflow(name="remote-triage")
        cp = await api.wait_for_checkpoint(created["id"], PLAN_READY)

    def remote(*args: str, who: str = "ana") -> subprocess.CompletedProcess[str]:
        env = cli_env(
            tmp_path, ORCHESTRA_SERVER=server.base_url, ORCHESTRA_TOKEN=server.tokens[who]
        )
        return orchestra(tmp_path, None, *args, env=env)

    as_viewer = remote("snooze", cp["id"], "--for", "1h", who="vic")
    assert as_viewer.returncode == 1
    snoozed = as_json(remote("snooze", cp["id"][:8], "--for", "1h", "--json"))
    assert snoozed["snoozed_by"] == "ana" and snoozed["id"] == cp["id"]
    assert cp["id"] not in _ids(remote("inbox", "--json"))
    assert cp["id"] in _ids(remote("inbox", "--snoozed", "--json"))
    mine = remote("inbox", "--snoozed", "--workflow", created["id"], "--json")
    assert _ids(mine) == [cp["id"]]
    bad = remote("inbox", "--step", "nope")
    assert bad.returncode == 2 and PLAN_READY in bad.stderr
    ok(remote("unsnooze", cp["id"][:8]))
    assert cp["id"] in _ids(remote("inbox", "--json"))
