"""The ``orchestra`` command (entry point ``orchestra.cli.main:app``).

Importing the command modules registers their commands on :data:`app`.
"""

from __future__ import annotations

import orchestra.cli.admin
import orchestra.cli.commands
import orchestra.cli.notifications
import orchestra.cli.run
from orchestra.cli.app import app

COMMAND_MODULES = (
    orchestra.cli.admin,
    orchestra.cli.commands,
    orchestra.cli.notifications,
    orchestra.cli.run,
)
__all__ = ["app"]

if __name__ == "__main__":
    app()
