"""Deadlines that end the process: a blocking client call that never returns, a stop that hangs.

Ending the process loses nothing: uncommitted work is redelivered to the next owner, and the
supervisor restarts the process, which rebuilds its state from the log.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)
STUCK_EXIT_CODE = 75


def bounded(call: Callable[[], None], deadline_s: float) -> None:
    """Run a blocking client call; end the process if it has not returned in `deadline_s`."""
    timer = threading.Timer(deadline_s, _end_stuck, args=(deadline_s,))
    timer.daemon = True
    timer.start()
    try:
        call()
    finally:
        timer.cancel()


def _end_stuck(deadline_s: float) -> None:
    log.error(
        "a transaction step has not returned in %.0f s (librdkafka#5456/#5511); ending the "
        "process for its supervisor to restart it",
        deadline_s,
    )
    logging.shutdown()
    os._exit(STUCK_EXIT_CODE)


def end_process_after(grace_s: float, exit_code: int = 0) -> None:
    """Start a timer that ends the process if a graceful stop has not finished by then."""

    def _end() -> None:
        log.error("graceful stop still running after %.0fs; ending the process", grace_s)
        logging.shutdown()
        os._exit(exit_code)

    timer = threading.Timer(grace_s, _end)
    timer.daemon = True
    timer.start()
