"""Run the processors in this process (`ledger worker`) until SIGTERM or Ctrl-C.

`kill -USR1 <pid>` writes the stack of every asyncio task to the log: the way to see what a
worker that makes no progress is waiting for.
"""

from __future__ import annotations

import asyncio
import io
import logging
import signal
import sys
from types import FrameType

from streams.app import make_app
from streams.metrics import Metrics
from streams.settings import LedgerSettings
from streams.topics import ensure_topics

log = logging.getLogger(__name__)


def run_worker(settings: LedgerSettings) -> None:
    """Create missing topics, then run the faust worker; returns only when it stops."""
    ensure_topics(settings)
    metrics = Metrics()
    metrics.serve(settings.metrics_port)
    app = make_app(settings, metrics)
    signal.signal(signal.SIGUSR1, _dump_tasks)
    # faust's worker reads its own command line; give it one instead of ours.
    sys.argv = ["ledger worker", "worker", "--loglevel", settings.log_level, "--without-web"]
    app.main()


def _dump_tasks(_signum: int, _frame: FrameType | None) -> None:
    try:
        tasks = asyncio.all_tasks(asyncio.get_event_loop())
    except RuntimeError:
        return
    out = io.StringIO()
    for task in tasks:
        out.write(f"--- {task.get_name()} {task.get_coro()!r}\n")
        task.print_stack(limit=12, file=out)
    log.error("asyncio tasks (%d):\n%s", len(tasks), out.getvalue())
