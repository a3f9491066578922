"""``python -m orchestra.api``: the server without the CLI (see :mod:`orchestra.api.server`)."""

import sys

from orchestra.api.server import main

sys.exit(main())
