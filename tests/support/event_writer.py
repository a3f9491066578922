"""A process that appends events to a database as fast as it can, for cursor tests.

``python -m tests.support.event_writer URL COUNT SEED`` commits COUNT transactions.
Each appends events in two statements with a pause between them (so other
processes' ids land in between), and one in ten rolls back after its events
were inserted (ids taken and never committed: holes for good). It prints
``done`` and how many events it committed.
"""

from __future__ import annotations

import contextlib
import random
import sys
import time

from orchestra.domain.events import EventType
from orchestra.store.db import Database, Tx


class _RolledBack(Exception):
    pass


def main(url: str, count: int, seed: int) -> None:
    rng = random.Random(seed)
    db = Database(url, pool_size=2)
    committed = 0
    try:
        for n in range(count):
            fail = n % 10 == 7
            pause = rng.random() * 0.003

            def write(tx: Tx, n: int = n, fail: bool = fail, pause: float = pause) -> int:
                tx.emit(None, EventType.WORKFLOW_CREATED, {"writer": seed, "n": n, "part": 1})
                tx.emit(None, EventType.WORKFLOW_CREATED, {"writer": seed, "n": n, "part": 2})
                tx.flush_events()
                time.sleep(pause)
                tx.emit(None, EventType.WORKFLOW_CREATED, {"writer": seed, "n": n, "part": 3})
                if fail:
                    tx.flush_events()
                    raise _RolledBack
                return 3

            with contextlib.suppress(_RolledBack):
                committed += db.write_sync(write)
    finally:
        db.close()
    print("done", committed, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
