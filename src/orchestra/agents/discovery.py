"""Which agent CLIs are installed, and the agents-file entry to add for each.

``orchestra agents`` shows them next to the configured agents, so setting up a
real agent starts from what is on this machine rather than from the docs.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from orchestra.agents.config import AgentsConfig
from orchestra.agents.registry import create_adapter

#: The CLI adapters, their program, and the options of a first entry that is safe:
#: it reads and answers, it does not edit the workspace.
CLI_STARTERS: dict[str, dict[str, object]] = {
    "claude": {"permission_mode": "plan", "tools": ["Read", "Grep", "Glob"]},
    "codex": {"sandbox": "read-only"},
    "gemini": {"approval_mode": "default"},
}


@dataclass(frozen=True)
class FoundCli:
    """An agent CLI found on PATH."""

    adapter: str
    path: str
    version: str
    ok: bool
    #: The configured agents that run this program.
    configured_as: tuple[str, ...]

    def toml(self, name: str | None = None) -> str:
        """An ``[agents.NAME]`` entry for this program, to paste into the agents file."""
        name = name or self.adapter
        lines = [f"[agents.{name}]", f'adapter = "{self.adapter}"', f"[agents.{name}.options]"]
        for key, value in CLI_STARTERS[self.adapter].items():
            if isinstance(value, list):
                rendered = "[" + ", ".join(f'"{v}"' for v in value) + "]"
            else:
                rendered = f'"{value}"'
            lines.append(f"{key} = {rendered}")
        return "\n".join(lines) + "\n"


def _program_of(options: dict[str, object], default: str) -> str | None:
    configured = options.get("path")
    wanted = os.path.expanduser(configured) if isinstance(configured, str) else default
    found = shutil.which(wanted)
    return os.path.realpath(found) if found else None


async def find_clis(config: AgentsConfig) -> list[FoundCli]:
    """Every agent CLI on PATH with its version and the agents configured to run it."""
    found: list[FoundCli] = []
    for adapter in CLI_STARTERS:
        path = shutil.which(adapter)
        if path is None:
            continue
        real = os.path.realpath(path)
        configured = tuple(
            sorted(
                spec.name
                for spec in config.agents.values()
                if spec.adapter == adapter and _program_of(dict(spec.options), adapter) == real
            )
        )
        check = await create_adapter(adapter, {}).check()
        version = check.detail.split(" (", 1)[0] if check.ok else check.detail
        found.append(FoundCli(adapter, path, version, check.ok, configured))
    return found
