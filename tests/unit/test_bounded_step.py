"""librdkafka#5456 / #5511: `send_offsets_to_transaction` can block for ever, past its own timeout,
once the group coordinator it cached was decommissioned. The chaos run saw both workers' deciders
stuck in it for minutes with the cluster healthy again. The batched loop runs each transaction
step under `bounded`: a step that does not return ends the process for its supervisor."""

from __future__ import annotations

import subprocess
import sys
import time

from streams.worker.deadline import STUCK_EXIT_CODE


def _run(body: str) -> tuple[int, float]:
    started = time.monotonic()
    program = f"import time\nfrom streams.worker.deadline import bounded\n{body}\n"
    done = subprocess.run([sys.executable, "-c", program], timeout=60, capture_output=True)
    return done.returncode, time.monotonic() - started


def test_librdkafka_5456_a_step_that_never_returns_ends_the_process() -> None:
    code, took_s = _run("bounded(lambda: time.sleep(30), 0.5)")
    assert code == STUCK_EXIT_CODE
    assert took_s < 20


def test_a_step_that_returns_in_time_leaves_the_process_alone() -> None:
    code, _ = _run("bounded(lambda: time.sleep(0.1), 0.5)\ntime.sleep(1.0)")
    assert code == 0
