"""A schema-driven fuzz of the API: requests generated from ``/openapi.json`` (valid
and invalid ones) against a real server on both databases never get a 5xx, and
every error answer has the one error shape. The schema's generator never writes
a lone surrogate nor nests deeply, so hostile bodies (both, anywhere in a body)
are generated too: they used to be 500s."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.acceptance.server import ServerProcess, module_server_fixture
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 30


server = module_server_fixture()


def _operations(server: ServerProcess) -> list[Any]:
    schema = schemathesis.openapi.from_url(
        server.base_url + "/openapi.json",
        headers={"Authorization": f"Bearer {server.tokens['vic']}"},
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    # Live streams never end by themselves; test_api_flow covers them.
    return [op for op in operations if not op.path.endswith("/stream")]


def _known_ids(server: ServerProcess) -> dict[str, str]:
    """Real ids, so that generated requests also reach past the 404s: a workflow
    waiting at its plan checkpoint, and that checkpoint."""
    headers = {"Authorization": f"Bearer {server.tokens['root']}"}
    body = {"name": "fuzz target", "prompt": "p"}
    wf = requests.post(f"{server.base_url}/api/workflows", json=body, headers=headers, timeout=30)
    wid = wf.json()["id"]

    def at_checkpoint() -> dict[str, str] | None:
        cp = requests.get(f"{server.base_url}/api/workflows/{wid}", headers=headers, timeout=30)
        pending = cp.json()["pending_checkpoint"]
        return {"workflow_id": wid, "checkpoint_id": pending["id"]} if pending else None

    return eventually_sync(at_checkpoint, what="the fuzz target's checkpoint")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_gets_a_server_error(server: ServerProcess, mode: GenerationMode) -> None:
    operations = _operations(server)
    assert {op.path for op in operations} >= {
        "/api/workflows",
        "/api/checkpoints/{checkpoint_id}/resolve",
        "/health",
    }
    known = _known_ids(server)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {server.tokens['root']}"
    seen: dict[int, int] = {}
    unsatisfiable: list[str] = []
    runs = [(op, None) for op in operations]
    if mode is GenerationMode.POSITIVE:  # and again with real ids in the path
        runs += [
            (op, {k: v for k, v in known.items() if "{" + k + "}" in op.path})
            for op in operations
            if any("{" + k + "}" in op.path for k in known)
        ]
    for operation, path_parameters in runs:

        @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            response = case.call(base_url=server.base_url, session=session, timeout=30)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, (case.as_curl_command(), response.text)
            if response.status_code >= 400 and response.content:
                error = response.json()["error"]
                assert {"code", "message", "details"} == set(error), response.text

        try:
            check()
        except Unsatisfiable:
            # No invalid input exists for an operation without parameters (GET /health).
            assert mode is GenerationMode.NEGATIVE, operation.path
            unsatisfiable.append(operation.path)
    assert len(unsatisfiable) < len(operations) / 2, unsatisfiable
    assert sum(seen.values()) > len(operations)  # it really ran
    if mode is GenerationMode.POSITIVE:
        assert seen.get(200, 0) > 0 and seen.get(409, 0) > 0, seen  # got past the 404s


#: Text that may hold lone surrogates (category Cs), which JSON carries as ``\\ud800``.
HOSTILE_TEXT = st.text(
    alphabet=st.characters(categories=["Cs", "Ll", "Nd", "Zs"]), min_size=1, max_size=8
)


def _nest(value: Any, depth: int, as_list: bool) -> Any:
    for _ in range(depth):
        value = [value] if as_list else {"a": value}
    return value


#: A JSON value that is hostile somewhere: surrogates in keys or values, or nested deeply.
HOSTILE_VALUE = st.one_of(
    HOSTILE_TEXT,
    st.dictionaries(HOSTILE_TEXT, HOSTILE_TEXT, min_size=1, max_size=3),
    st.builds(_nest, HOSTILE_TEXT, st.integers(30, 400), st.booleans()),
)


def _hostile_bodies(known: dict[str, str]) -> list[tuple[str, Any]]:
    """(path, body builder): each builder puts a hostile value in one place of a real body."""

    def workflow(field: str) -> Any:
        return lambda v: {"name": "n", "prompt": "p", field: v}

    return [
        ("/api/workflows", workflow("name")),
        ("/api/workflows", workflow("prompt")),
        ("/api/workflows", workflow("workspace_path")),
        ("/api/workflows", workflow("agents")),
        (
            "/api/workflows",
            lambda v: {
                "name": "n",
                "prompt": "p",
                "agents": {"planner": {"adapter": "demo", "options": {"k": v}}},
            },
        ),
        (f"/api/checkpoints/{known['checkpoint_id']}/resolve", lambda v: {"action": v}),
        (
            f"/api/checkpoints/{known['checkpoint_id']}/resolve",
            lambda v: {"action": "nothing-such", "notes": v, "edited_content": v},
        ),
        ("/api/tokens", lambda v: {"name": v, "role": "viewer"}),
    ]


def _fuzz_hostile(
    server: ServerProcess, session: requests.Session, seen: dict[int, int], path: str, build: Any
) -> None:
    @given(value=HOSTILE_VALUE)
    @settings(
        max_examples=15,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(value: Any) -> None:
        body = json.dumps(build(value))  # ensure_ascii: a surrogate goes as a \\u escape
        response = session.post(server.base_url + path, data=body, timeout=30)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code < 500, (path, body[:300], response.text)
        if response.status_code >= 400:
            assert {"code", "message", "details"} == set(response.json()["error"])

    check()


def test_hostile_bodies_get_a_client_error(server: ServerProcess) -> None:
    """Lone surrogates and deep nesting anywhere in a body: a 4xx in the error shape."""
    known = _known_ids(server)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {server.tokens['root']}"
    session.headers["Content-Type"] = "application/json"
    seen: dict[int, int] = {}
    for path, build in _hostile_bodies(known):
        _fuzz_hostile(server, session, seen, path, build)
    assert seen.get(422, 0) > 0, seen
