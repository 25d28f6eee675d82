"""Watchdogs for two faust failure modes seen in the two-worker rebalance test.

1. A partition stops being delivered after a rebalance (at_least_once run: commands[1] stuck
   at offset 32 for minutes with the worker idle). An input topic with lag on which the agent
   made no progress at all for `stall_s` makes the process exit with code 70 so its supervisor
   restarts it: a restart re-reads from committed offsets, and every handler is idempotent. It
   does not poke faust's flow control (resume_partitions/resume_flow): doing so after a short,
   harmless tail lag turned a healthy 10,000-command run into a real stall.
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
    """A stall is an input topic with lag whose agent made progress on none of its partitions
    for `stall_s`. Per-partition silence is no stall: one agent serves all its partitions from
    one stream, so under a backlog a partition's last records can wait behind the others."""

    stall_s: float
    last_seen: dict[tuple[str, int], int | None] = field(default_factory=dict)
    progress_at: dict[str, float] = field(default_factory=dict)  # topic -> last progress

    def check(
        self, consumer: Any, processed: dict[tuple[str, int], int], inputs: dict[str, int]
    ) -> None:
        """`inputs`: topic -> how many trailing offsets may be transaction markers (an idle
        partition written transactionally always ends with one, which is no lag)."""
        now = time.monotonic()
        lagging: dict[str, list[tuple[Any, int]]] = {topic: [] for topic in inputs}
        for tp in consumer.assignment():
            if tp.topic not in inputs:
                continue
            done = processed.get((tp.topic, tp.partition))
            if self.last_seen.get((tp.topic, tp.partition)) != done:
                self.last_seen[(tp.topic, tp.partition)] = done
                self.progress_at[tp.topic] = now
            lag = lag_of(consumer, tp, done)
            if lag > inputs[tp.topic]:
                lagging[tp.topic].append((tp, lag))
        for topic, behind in lagging.items():
            since = self.progress_at.setdefault(topic, now)
            if behind and now - since >= self.stall_s:
                _exit_for_restart(topic, behind, now - since)


def lag_of(consumer: Any, tp: Any, done: int | None) -> int:
    """Records of `tp` not processed yet, `done` being the last offset processed (or None)."""
    highwater: int | None = consumer.highwater(tp)
    if highwater is None:
        # Not fetched from since the assignment: nothing is known to be behind yet. (Seen as a
        # worker crash in the two-worker exactly_once test, right after a rebalance.)
        return 0
    return max(highwater - (done + 1 if done is not None else 0), 0)


def _exit_for_restart(topic: str, behind: list[tuple[Any, int]], silent_s: float) -> None:
    detail = ", ".join(f"[{tp.partition}] lag {lag}" for tp, lag in behind)
    log.critical(
        "%s stalled: no progress for %.0fs with %s; exiting for a restart", topic, silent_s, detail
    )
    logging.shutdown()
    os._exit(STALLED_EXIT_CODE)


def end_process_after(grace_s: float, exit_code: int = 0) -> None:
    """Start a timer that ends the process if a graceful stop has not finished by then."""

    def _end() -> None:
        log.error("graceful stop still running after %.0fs; ending the process", grace_s)
        logging.shutdown()
        os._exit(exit_code)

    timer = threading.Timer(grace_s, _end)
    timer.daemon = True
    timer.start()
