"""`ledger worker`: a decider loop and a projector loop, one thread each, until SIGTERM or
Ctrl-C. A loop that fails ends the process (a supervisor restarts it; state is rebuilt from the
log)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from streams.errors import LedgerError
from streams.metrics import Metrics
from streams.settings import LedgerSettings
from streams.topics import ensure_topics
from streams.worker.deadline import end_process_after
from streams.worker.decider import BatchDecider
from streams.worker.loop import BatchLoop, Stage
from streams.worker.projector import BatchProjector

log = logging.getLogger(__name__)


def run_worker(settings: LedgerSettings) -> None:
    """Create missing topics, then run both stages; returns only when they stop."""
    ensure_topics(settings)
    metrics = Metrics()
    metrics.serve(settings.metrics_port)
    stop = threading.Event()
    failures: list[BaseException] = []
    stages: dict[str, Stage] = {
        "decider": BatchDecider(
            settings, settings.policy(), metrics, checkpoint_interval_s=settings.snapshot_interval_s
        ),
        "projector": BatchProjector(settings, metrics),
    }
    loops = [
        BatchLoop(
            settings,
            stage,
            role,
            settings.instance_id,
            on_lag=_lag_gauge(metrics),
            on_restore=_restore_figures(metrics),
        )
        for role, stage in stages.items()
    ]
    threads = [
        threading.Thread(target=_run_loop, args=(loop, stop, failures), name=loop.role)
        for loop in loops
    ]

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    for thread in threads:
        thread.start()
    bounded = False
    while any(thread.is_alive() for thread in threads):
        for thread in threads:
            thread.join(timeout=0.5)
        if stop.is_set() and not bounded:
            # Closing a consumer or flushing a producer can wait for a broker that is gone for
            # good: the stop must end anyway (a supervisor restarts a failed worker).
            end_process_after(settings.shutdown_grace_s, exit_code=1 if failures else 0)
            bounded = True
    if failures:
        raise LedgerError(f"a processing loop failed: {failures[0]!r}") from failures[0]


def _lag_gauge(metrics: Metrics) -> Callable[[str, int, int], None]:
    def report(topic: str, partition: int, lag: int) -> None:
        metrics.lag.labels(topic=topic, partition=str(partition)).set(lag)

    return report


def _restore_figures(metrics: Metrics) -> Callable[[str, float, int], None]:
    def report(stage: str, seconds: float, read: int) -> None:
        metrics.restores.labels(stage=stage).inc()
        metrics.restore_records.labels(stage=stage).inc(read)
        metrics.restore_seconds.labels(stage=stage).set(seconds)

    return report


def _run_loop(loop: BatchLoop, stop: threading.Event, failures: list[BaseException]) -> None:
    try:
        loop.run(stop)
    except BaseException as error:
        log.exception("%s loop failed", loop.role)
        failures.append(error)
        stop.set()  # the other loop stops too: the process ends and is restarted whole
