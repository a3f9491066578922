"""The README's "Writing a workflow" example runs as written, on both databases.

The test takes the Python block after ``<!-- workflow-example -->`` in README.md,
runs it, registers the definition it builds and drives that workflow through the
service with the demo agent: a README edit that breaks the example fails here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestra.domain.models import Checkpoint
from orchestra.domain.statuses import CheckpointStatus, WorkflowStatus
from orchestra.engine.definition import WorkflowDefinition, registered
from orchestra.engine.runner import Worker
from orchestra.service import Orchestra
from tests.support.engine import decide, pending, runs

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- workflow-example -->"


def _example() -> str:
    """The marked block's code (the section may show other blocks; only it is run),
    on the lines it has in README.md, so a traceback points into the README."""
    text = README.read_text(encoding="utf-8")
    assert text.count(MARKER) == 1, "README.md needs exactly one workflow-example marker"
    before, after = text.split(MARKER, 1)
    found = re.match(r"\s*```python\n(.*?)\n```", after, re.DOTALL)
    assert found is not None, "no ```python block right after the marker"
    skipped = before.count("\n") + after[: found.start(1)].count("\n")
    return "\n" * skipped + found.group(1)


@pytest.fixture(autouse=True)
def haiku() -> Iterator[WorkflowDefinition[Any]]:
    """The README's definition, registered for the test."""
    namespace: dict[str, Any] = {"__name__": "readme_workflow"}
    exec(compile(_example(), str(README), "exec"), namespace)
    definition = namespace["haiku"]
    assert isinstance(definition, WorkflowDefinition)
    with registered(definition):
        yield definition


async def _review(service: Orchestra, worker: Worker, prompt: str) -> Checkpoint:
    """A new haiku workflow, run to its checkpoint."""
    wf = await service.create_workflow(name="haiku", prompt=prompt, type="haiku")
    await worker.run_until_idle()
    return await pending(service, wf.id, "review")


async def test_the_readme_haiku_is_written_and_approved(service: Orchestra, worker: Worker) -> None:
    cp = await _review(service, worker, "spring rain")
    assert [a.name for a in cp.actions] == ["approve", "cancel"]
    (poet,) = await runs(service, cp.workflow_id)
    assert poet.prompt == "Write a haiku about spring rain."
    assert poet.output and cp.editable_content == poet.output

    done = await decide(service, worker, cp, "approve")
    assert done.status is WorkflowStatus.COMPLETED, done.error
    assert done.result == {"haiku": poet.output}


async def test_the_readme_haiku_keeps_a_persons_edit(service: Orchestra, worker: Worker) -> None:
    mine = "old pond\na frog jumps in\nsplash"
    cp = await _review(service, worker, "snow")
    done = await decide(service, worker, cp, "approve", edited_content=mine)
    assert done.status is WorkflowStatus.COMPLETED, done.error
    assert done.result == {"haiku": mine}


async def test_the_readme_haiku_can_be_cancelled(service: Orchestra, worker: Worker) -> None:
    cp = await _review(service, worker, "fog")
    gone = await decide(service, worker, cp, "cancel")
    assert gone.status is WorkflowStatus.CANCELLED and gone.result is None
    assert (await service.get_checkpoint(cp.id)).status is CheckpointStatus.REJECTED
