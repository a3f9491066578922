"""A workspace's check command, run as the agents are: exit code, bounded output tail,
the whole process group stopped on timeout, nothing interpreted by a shell."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from orchestra.workflows.checks import TAIL_LINE_CHARS, TAIL_LINES, run_check

PY = sys.executable


async def test_a_passing_check_and_a_failing_one_with_its_output(tmp_path: Path) -> None:
    ok = await run_check([PY, "-c", "print('3 passed')"], tmp_path, timeout_s=30)
    assert ok.passed and ok.exit_code == 0 and ok.output_tail == "3 passed"
    script = "import sys; print('test_flag FAILED'); print('boom', file=sys.stderr); sys.exit(1)"
    failed = await run_check([PY, "-c", script], tmp_path, timeout_s=30)
    assert not failed.passed and failed.exit_code == 1 and failed.problem is None
    assert "test_flag FAILED" in failed.output_tail and "boom" in failed.output_tail


async def test_it_runs_in_the_worktree_and_only_its_output_tail_is_kept(tmp_path: Path) -> None:
    (tmp_path / "marker.txt").write_text("here")
    script = (
        "import pathlib; print(pathlib.Path('marker.txt').read_text())\n"
        f"for i in range({TAIL_LINES * 3}): print(str(i) + 'x' * {TAIL_LINE_CHARS * 2})"
    )
    found = await run_check([PY, "-c", script], tmp_path, timeout_s=30)
    lines = found.output_tail.splitlines()
    assert len(lines) == TAIL_LINES and all(len(line) <= TAIL_LINE_CHARS for line in lines)
    assert lines[-1].startswith(str(TAIL_LINES * 3 - 1))  # the end is what is kept


async def test_a_check_past_its_timeout_is_stopped_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(600)\n"
    )
    found = await run_check([PY, "-c", script], tmp_path, timeout_s=1)
    assert found.exit_code is None and not found.passed
    assert found.problem is not None and found.problem.startswith("timeout")
    assert "started" in found.output_tail
    child = int(pid_file.read_text())
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text()


async def test_arguments_are_never_a_shell_command(tmp_path: Path) -> None:
    found = await run_check(
        [PY, "-c", "import sys; print(sys.argv[1:])", "$(touch pwned)", "; rm -rf x", "`id`"],
        tmp_path,
        timeout_s=30,
    )
    assert found.output_tail == "['$(touch pwned)', '; rm -rf x', '`id`']"
    assert not list(tmp_path.iterdir())


async def test_a_missing_program_or_a_bad_command_is_a_clear_result(tmp_path: Path) -> None:
    missing = await run_check(["no-such-checker-program"], tmp_path, timeout_s=30)
    assert missing.exit_code is None and missing.problem is not None
    assert "not_installed" in missing.problem
    for bad in ([], [""], ["pytest", 3]):
        with pytest.raises(ValueError, match="non-empty list"):
            await run_check(bad, tmp_path, timeout_s=30)  # type: ignore[arg-type]
