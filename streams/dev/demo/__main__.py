"""`make demo`: a month of repayments through misbehaving payment channels, end to end.

Starts the local broker (unless KAFKA_BOOTSTRAP_SERVERS names one), the channel simulator, a
worker and the gateway; opens 50 loans; runs 30 business days with all three doors (the
borrower's app, the auto-debit job, collection agents) while the channels time out, lose
requests, answer "processing", fail over to the backup, reverse a success and debit a card twice;
reconciles every statement day; prints a summary per channel and the checks; writes the report;
stops everything it started. Each run writes to its own topic prefix (printed), so it can be
inspected afterwards with `ledger --topic-prefix ... history L007`.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from streams.dev.demo.run import DemoRun
from streams.dev.demo.scenario import HOME, console, running
from streams.dev.localkafka import LocalBroker
from streams.settings import LedgerSettings
from streams.topics import ensure_topics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.dev.demo", description=__doc__)
    parser.add_argument("--loans", type=int, default=50)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--report", type=Path, default=HOME / "demo" / "report")
    arguments = parser.parse_args(argv)
    started = time.monotonic()
    named = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None if named else LocalBroker(home=(HOME / "kafka").resolve())
    started_broker = broker is not None and not broker.is_ready()
    bootstrap = named or _local_broker(broker)
    prefix = f"demo-{datetime.now(UTC):%Y%m%d-%H%M%S}."
    settings = LedgerSettings(bootstrap_servers=bootstrap, topic_prefix=prefix)
    console.print(f"[bold]Kafka[/] {bootstrap}, topic prefix [bold]{prefix}[/]")
    ensure_topics(settings)

    with running(HOME / "demo" / prefix.rstrip(".")) as processes:
        run = DemoRun(settings, processes, random.Random(arguments.seed), console)
        ok = run.play(arguments.loans, arguments.days, arguments.seed, arguments.report)
    if started_broker and broker is not None:
        broker.down()
        console.print("stopped the broker it started; `make kafka-up` brings it back, topics kept")
    console.print(
        f"inspect: ledger --bootstrap-servers {bootstrap} --topic-prefix {prefix} history L007"
    )
    console.print(f"demo finished in {time.monotonic() - started:.0f} s")
    return 0 if ok else 1


def _local_broker(broker: LocalBroker | None) -> str:
    assert broker is not None
    if not broker.is_ready():
        console.print("starting the local Kafka broker (the first run downloads its jars)...")
    return broker.up()


if __name__ == "__main__":
    sys.exit(main())
