"""How many hostile records a second one worker drains: the capacity the hostile-input test's
offered rate must stay under (it measures whether valid traffic keeps its rate, which no worker
can when offered more than it can read).

    make kafka-up && .venv/bin/python -m tests.integration.hostile_capacity [at_least_once]

Opens the 500 target loans, stops the worker, writes the 100,000 hostile records of the test
(seed 8) with 5,000 valid commands spread among them, then starts a worker and times it from its
start until every valid command is answered (its start and restore included).
"""

from __future__ import annotations

import random
import signal
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer

from streams.topics import ensure_topics
from tests.integration.hostile import hostile, opened_loans
from tests.integration.pipeline import Pipeline
from tests.support.workload import repayment_cycle

HOSTILE = 100_000


def main(guarantee: str = "at_least_once", bootstrap: str = "127.0.0.1:9092") -> None:
    line = Pipeline(bootstrap, guarantee, Path(tempfile.mkdtemp()))
    ensure_topics(line.settings)
    try:
        opened = opened_loans("hx", 500)
        line.start_worker()
        line.send(opened)
        line.wait_for_outcomes({c.command_id for c in opened})
        line.signal_worker("w1", signal.SIGTERM, for_good=True)
        rng = random.Random(8)
        records = [hostile(rng, n, [o.loan_id for o in opened], opened) for n in range(HOSTILE)]
        valid = repayment_cycle(1_000, seed=82)
        producer = Producer(line.settings.producer_config() | {"message.max.bytes": 1_000_000})
        per_valid = len(records) // len(valid)
        for index, command in enumerate(valid):
            line.send_raw(producer, command.loan_id.encode(), command.model_dump_json().encode())
            for record in records[index * per_valid : (index + 1) * per_valid]:
                line.send_raw(producer, record.key, record.value)
            producer.poll(0)
        producer.flush(60)
        line.stopped.discard("w1")
        started = time.monotonic()
        line.start_worker()
        line.wait_for_outcomes({c.command_id for c in valid}, timeout_s=600)
        seconds = time.monotonic() - started
    finally:
        line.stop()
    total = len(records) + len(valid)
    print(f"{guarantee}: {total:,} records drained in {seconds:.1f} s: {total / seconds:,.0f}/s")


if __name__ == "__main__":
    main(*sys.argv[1:])
