"""Plans written into the workspace, where the person and later agents can read them.

Each iteration's plan goes to ``<workspace>/.orchestra/plans/<slug>/plan-vN.md``
and the approved one to ``plan-final.md``. The path is built from a slug (only
``[a-z0-9-]``, bounded), then resolved and checked to stay inside the
workspace, so neither a workflow name nor a symlink planted in the workspace
can send a write elsewhere. The slug carries a prefix of the workflow id, so
two workflows with the same name never overwrite each other's files.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

from orchestra.domain.errors import InvalidInput

PLANS_DIR = Path(".orchestra") / "plans"
SLUG_MAX_CHARS = 60
ID_PREFIX_CHARS = 8
FINAL = "final"


def slugify(text: str, max_chars: int = SLUG_MAX_CHARS) -> str:
    """Lowercase ``[a-z0-9-]`` words of ``text``, at most ``max_chars`` long."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:max_chars].rstrip("-")


def _file_name(version: int | str) -> str:
    if version == FINAL:
        return "plan-final.md"
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidInput(
            f"plan version must be a positive number or {FINAL!r}, not {version!r}",
            details={"version": str(version)},
        )
    return f"plan-v{version}.md"


def plan_path(workspace: Path, workflow_slug: str, version: int | str) -> Path:
    """Where plan ``version`` (a number, or ``"final"``) of a workflow lives."""
    slug = slugify(workflow_slug)
    if not slug:
        raise InvalidInput(f"workflow slug {workflow_slug!r} has no usable characters")
    root = workspace.resolve()
    path = (root / PLANS_DIR / slug / _file_name(version)).resolve()
    if not path.is_relative_to(root / PLANS_DIR):
        raise InvalidInput(
            f"plan path {path} leaves the workspace's plans folder {root / PLANS_DIR}",
            details={"workspace": str(root)},
        )
    return path


def workflow_slug(workflow_id: str, name: str) -> str:
    """The folder name of a workflow's plans: its name, then a prefix of its id."""
    id_part = slugify(str(workflow_id))[:ID_PREFIX_CHARS].strip("-")
    if not id_part:
        raise InvalidInput(f"workflow id {workflow_id!r} has no usable characters")
    name_part = slugify(name, SLUG_MAX_CHARS - ID_PREFIX_CHARS - 1) or "workflow"
    return f"{name_part}-{id_part}"


def write_plan(workspace: Path, workflow_id: str, name: str, version: int | str, text: str) -> Path:
    """Write a plan atomically (temp file, then rename) and return its path."""
    if not workspace.is_dir():
        raise InvalidInput(f"workspace {workspace} does not exist or is not a directory")
    path = plan_path(workspace, workflow_slug(workflow_id, name), version)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return path


def sync_plan(
    workspace: Path, workflow_id: str, name: str, version: int | str, text: str
) -> Path | None:
    """Write a plan unless its file already holds exactly ``text`` (hooks run more than
    once for one state); the path written, or ``None`` when it was up to date."""
    path = plan_path(workspace, workflow_slug(workflow_id, name), version)
    with contextlib.suppress(FileNotFoundError, UnicodeDecodeError):  # absent or foreign
        if path.read_text(encoding="utf-8") == text:
            return None
    return write_plan(workspace, workflow_id, name, version, text)
