"""Watchdogs for two faust failure modes seen in the two-worker rebalance test.

1. A partition stops being delivered after a rebalance (at_least_once run: commands[1] stuck at
   offset 32 for minutes with the worker idle). An assigned input partition with lag and no
   progress for `stall_s` is resumed; if it is still stuck after another `stall_s`, the process
   exits with code 70 so its supervisor restarts it: a restart re-reads from committed offsets,
   and every handler is idempotent.
2. A graceful stop hangs under exactly_once after `IllegalOperation('Not in the middle of a
   transaction')`. Once shutdown begins, the process is ended after `grace_s`: uncommitted work
   is redelivered to the next owner, so ending it loses nothing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)
STALLED_EXIT_CODE = 70


@dataclass
class StallWatch:
    stall_s: float
    # (topic, partition) -> (last processed offset seen, when it last changed)
    progress: dict[tuple[str, int], tuple[int | None, float]] = field(default_factory=dict)
    resumed: dict[tuple[str, int], float] = field(default_factory=dict)

    def check(
        self, consumer: Any, processed: dict[tuple[str, int], int], inputs: dict[str, int]
    ) -> None:
        """`inputs`: topic -> how many trailing offsets may be transaction markers (an idle
        partition written transactionally always ends with one, which is no lag)."""
        now = time.monotonic()
        for tp in consumer.assignment():
            if tp.topic in inputs:
                done = processed.get((tp.topic, tp.partition))
                self._check_one(consumer, tp, done, now, inputs[tp.topic])

    def _check_one(
        self, consumer: Any, tp: Any, done: int | None, now: float, markers: int
    ) -> None:
        key = (tp.topic, tp.partition)
        last, since = self.progress.get(key, (None, now))
        if done != last or key not in self.progress:
            self.progress[key] = (done, now)
            self.resumed.pop(key, None)
            return
        lag = consumer.highwater(tp) - (done + 1 if done is not None else 0)
        if lag <= markers or now - since < self.stall_s:
            return
        if key not in self.resumed:
            paused = tp in getattr(consumer, "_paused_partitions", set())
            log.error(
                "%s[%d] stalled: lag %d, no progress for %.0fs (paused by faust: %s); resuming",
                tp.topic, tp.partition, lag, now - since, paused,
            )  # fmt: skip
            consumer.resume_partitions([tp])
            consumer.resume_flow()
            self.resumed[key] = now
        elif now - self.resumed[key] >= self.stall_s:
            log.critical(
                "%s[%d] still stalled after resuming; exiting for a restart", tp.topic, tp.partition
            )
            logging.shutdown()
            os._exit(STALLED_EXIT_CODE)


def end_process_after(grace_s: float) -> None:
    """Start a timer that ends the process if a graceful stop has not finished by then."""

    def _end() -> None:
        log.error("graceful stop still running after %.0fs; ending the process", grace_s)
        logging.shutdown()
        os._exit(0)

    timer = threading.Timer(grace_s, _end)
    timer.daemon = True
    timer.start()
