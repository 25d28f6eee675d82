"""Run the processors in this process (`ledger worker`) until SIGTERM or Ctrl-C.

`kill -s RTMIN+1 <pid>` writes the await chain of every asyncio task to the log: how to see what a
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
    """Create missing topics, then run the worker; returns only when it stops."""
    if settings.engine == "batched":
        from streams.batched.worker import run_batched_worker

        run_batched_worker(settings)
        return
    ensure_topics(settings)
    metrics = Metrics()
    metrics.serve(settings.metrics_port)
    app = make_app(settings, metrics)
    # SIGUSR1 and SIGUSR2 belong to mode (faust), which dumps less: the await chains matter.
    signal.signal(signal.SIGRTMIN + 1, _dump_tasks)
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
        out.write(f"--- {task.get_name()}\n")
        for line in _await_chain(task.get_coro()):
            out.write(f"    {line}\n")
    log.error("asyncio tasks (%d):\n%s", len(tasks), out.getvalue())


def _await_chain(awaitable: object, depth: int = 0) -> list[str]:
    """Where a task waits: each coroutine or generator it awaits, innermost last."""
    frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
    if frame is None or depth > 40:
        return [repr(awaitable)[:160]]
    here = f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}"
    inner = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
    return [here, *(_await_chain(inner, depth + 1) if inner is not None else [])]
