"""A worker in a process of its own, for crash tests: the test can SIGKILL it.

    python tests/support/worker_process.py URL [--lease-ttl S] [--heartbeat S]
        [--poll S] [--concurrency N] [--name NAME] [--deadline-poll S]

It prints ``ready`` once its database is open, runs ``Engine(Database(url)).run(stop)``
(the worker and the sweep of due deadlines, as ``orchestra worker`` does) and stops
gracefully on SIGTERM or SIGINT (exit status 0).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from orchestra.engine.api import Engine
from orchestra.engine.runner import WorkerSettings
from orchestra.store.db import Database


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--lease-ttl", type=float, default=2.0)
    parser.add_argument("--heartbeat", type=float, default=0.3)
    parser.add_argument("--poll", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--name", default=None)
    parser.add_argument("--deadline-poll", type=float, default=0.1)
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> None:
    settings = WorkerSettings(
        concurrency=args.concurrency,
        lease_ttl_s=args.lease_ttl,
        heartbeat_s=args.heartbeat,
        poll_s=args.poll,
        shutdown_grace_s=5.0,
        progress_interval_s=0.05,
        deadline_poll_s=args.deadline_poll,
    )
    if args.name:
        settings.name = args.name
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    db = Database(args.url)
    try:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await Engine(db, settings).run(stop)
    finally:
        db.close()


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    asyncio.run(main(parse(sys.argv[1:])))
