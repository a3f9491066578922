"""Plans on disk: predictable paths inside the workspace, never outside it, and never
over another workflow's files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestra.domain.errors import InvalidInput
from orchestra.workflows.plan_files import plan_path, slugify, workflow_slug, write_plan

WORKFLOW_ID = "3f2a9c1e-7b4d-4e8a-9c0f-112233445566"


def test_plan_paths_follow_the_layout(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    assert plan_path(tmp_path, "add-login", 1) == root / ".orchestra/plans/add-login/plan-v1.md"
    assert plan_path(tmp_path, "add-login", 12).name == "plan-v12.md"
    assert plan_path(tmp_path, "add-login", "final").name == "plan-final.md"


@pytest.mark.parametrize(
    "slug", ["../../etc", "../../../../../../tmp/evil", "/etc/passwd", "a/../../b", "~root"]
)
def test_hostile_slugs_stay_inside_the_plans_folder(tmp_path: Path, slug: str) -> None:
    path = plan_path(tmp_path, slug, 1)
    assert path.is_relative_to(tmp_path.resolve() / ".orchestra" / "plans")
    assert ".." not in path.parts
    assert set(path.parent.name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")


@pytest.mark.parametrize("version", ["../../x", "v1", 0, -3, "final/../../x", True])
def test_bad_versions_are_refused(tmp_path: Path, version: int | str) -> None:
    with pytest.raises(InvalidInput):
        plan_path(tmp_path, "ok", version)


def test_slugs_without_usable_characters_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        plan_path(tmp_path, "../..//", 1)


def test_a_symlink_out_of_the_workspace_is_refused(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    outside = tmp_path / "outside"
    (workspace / ".orchestra").mkdir(parents=True)
    outside.mkdir()
    os.symlink(outside, workspace / ".orchestra" / "plans")
    with pytest.raises(InvalidInput, match="leaves the workspace"):
        write_plan(workspace, WORKFLOW_ID, "Add login", 1, "# Plan")
    assert list(outside.iterdir()) == []


def test_slugify_is_bounded_and_plain() -> None:
    assert slugify("Add OAuth2 Login — ÉTÉ!!") == "add-oauth2-login-t"
    assert len(slugify("x" * 500)) == 60
    assert workflow_slug(WORKFLOW_ID, "Add login") == "add-login-3f2a9c1e"


def test_write_plan_writes_each_version_and_the_final(tmp_path: Path) -> None:
    first = write_plan(tmp_path, WORKFLOW_ID, "Add login", 1, "# Plan v1\n")
    second = write_plan(tmp_path, WORKFLOW_ID, "Add login", 2, "# Plan v2\n")
    final = write_plan(tmp_path, WORKFLOW_ID, "Add login", "final", "# Plan v2\n")
    assert first.read_text() == "# Plan v1\n"
    assert second.read_text() == "# Plan v2\n"
    assert final.name == "plan-final.md"
    assert first.parent == second.parent == final.parent
    assert sorted(p.name for p in first.parent.iterdir()) == [
        "plan-final.md",
        "plan-v1.md",
        "plan-v2.md",
    ]  # no temp files left behind


def test_rewriting_a_version_replaces_it(tmp_path: Path) -> None:
    write_plan(tmp_path, WORKFLOW_ID, "Add login", 1, "old")
    path = write_plan(tmp_path, WORKFLOW_ID, "Add login", 1, "new")
    assert path.read_text() == "new"


def test_two_workflows_with_one_name_never_share_files(tmp_path: Path) -> None:
    mine = write_plan(tmp_path, WORKFLOW_ID, "Add login", 1, "mine")
    theirs = write_plan(tmp_path, "9d8e7f6a-0000-4000-8000-000000000000", "Add login", 1, "theirs")
    assert mine != theirs
    assert mine.read_text() == "mine"
    assert theirs.read_text() == "theirs"


def test_a_missing_workspace_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        write_plan(tmp_path / "absent", WORKFLOW_ID, "x", 1, "text")
