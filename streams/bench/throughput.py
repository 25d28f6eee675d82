"""Pipeline throughput on the local broker: `python -m streams.bench.throughput --loans 2000`.

Starts one worker (or several), sends full repayment cycles (5 commands a loan), and reports
commands per second until every outcome is out and the balances topic is complete. A program
that prints figures, not a test. `--profile` runs the worker under py-spy and writes a
flame graph (SVG) beside the log.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer

from schemas.commands import Command
from streams.localkafka import LocalBroker, free_port
from streams.settings import LedgerSettings
from streams.topics import ensure_topics


def _cycles(loans: int) -> list[Command]:
    from tests.integration.workload import repayment_cycle  # the same workload as the tests

    return repayment_cycle(loans, seed=99)


def _count_records(settings: LedgerSettings, base: str) -> int:
    from tests.integration.pipeline import read_topic

    return len(
        read_topic(settings.bootstrap_servers, settings.topic(base), settings.partitions, 0, 10)
    )


def _wait_for_balances(settings: LedgerSettings, deadline_s: float) -> bool:
    """True once ledger.balances equals an independent fold of ledger.events."""
    from tests.integration.pipeline import LogFold, balances_from_topic, read_topic

    def read(base: str) -> list[tuple[bytes | None, bytes | None, int, int]]:
        return read_topic(
            settings.bootstrap_servers, settings.topic(base), settings.partitions, 0, 10
        )

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if balances_from_topic(read("ledger.balances")) == dict(
            LogFold().fold(read("ledger.events")).balances
        ):
            return True
        time.sleep(1)
    return False


def _clearing_updates_per_shard(settings: LedgerSettings) -> dict[str, int]:
    """How the hot shared account's balance updates spread over partitions (one per shard)."""
    from tests.integration.pipeline import read_topic

    counts: dict[str, int] = {}
    records = read_topic(
        settings.bootstrap_servers, settings.topic("ledger.balances"), settings.partitions, 0, 10
    )
    for key, _value, partition, _offset in records:
        if key is not None and key.startswith(b"channel:alpha:clearing@"):
            counts[f"partition {partition}"] = counts.get(f"partition {partition}", 0) + 1
    return dict(sorted(counts.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loans", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument(
        "--guarantee", choices=["at_least_once", "exactly_once"], default="at_least_once"
    )
    parser.add_argument(
        "--profile", action="store_true", help="record the first worker with py-spy"
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    broker = LocalBroker(home=workdir / "kafka", port=free_port(), controller_port=free_port())
    bootstrap = broker.up()
    try:
        print(json.dumps(_run(args, bootstrap, workdir), indent=2))
    finally:
        broker.down()


def _run(args: argparse.Namespace, bootstrap: str, workdir: Path) -> dict[str, object]:
    settings = LedgerSettings(
        bootstrap_servers=bootstrap, topic_prefix="bench.", partitions=args.partitions
    )
    ensure_topics(settings)
    commands = _cycles(args.loans)
    workers = [_start_worker(args, settings, workdir, n) for n in range(args.workers)]
    time.sleep(8)  # let the group form before the clock starts
    producer = Producer(settings.producer_config())
    started = time.monotonic()
    for command in commands:
        producer.produce(
            settings.topic("ledger.commands"),
            key=command.loan_id.encode(),
            value=command.model_dump_json().encode(),
        )
        producer.poll(0)
    producer.flush(60)
    sent = time.monotonic() - started
    while _count_records(settings, "ledger.outcomes") < len(commands):
        time.sleep(0.5)
    decided = time.monotonic() - started
    balanced = _wait_for_balances(settings, deadline_s=120.0)
    shards = _clearing_updates_per_shard(settings)
    balanced_at = time.monotonic() - started if balanced else None
    for worker in workers:
        worker.terminate()
        worker.wait(timeout=120)
    return {
        "commands": len(commands),
        "guarantee": args.guarantee,
        "workers": args.workers,
        "partitions": args.partitions,
        "send_seconds": round(sent, 2),
        "all_outcomes_seconds": round(decided, 2),
        "commands_per_second": round(len(commands) / decided, 1),
        "balances_equal_fold_seconds": None if balanced_at is None else round(balanced_at, 2),
        "channel_alpha_clearing_updates_per_shard": shards,
        "workdir": str(workdir),
    }


def _start_worker(
    args: argparse.Namespace, settings: LedgerSettings, workdir: Path, n: int
) -> subprocess.Popen[bytes]:
    environment = os.environ | {
        "LEDGER_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "LEDGER_TOPIC_PREFIX": settings.topic_prefix,
        "LEDGER_PARTITIONS": str(settings.partitions),
        "LEDGER_PROCESSING_GUARANTEE": args.guarantee,
        "LEDGER_DATA_DIR": str(workdir / f"w{n}-data"),
    }
    command = [sys.executable, "-m", "ledger.cli.main", "worker"]
    if args.profile and n == 0:
        command = [
            str(Path(sys.executable).with_name("py-spy")),
            "record",
            "-o",
            str(workdir / "worker.svg"),
            "--subprocesses",
            "--",
            *command,
        ]
    log = (workdir / f"w{n}.log").open("wb")
    return subprocess.Popen(command, env=environment, stdout=log, stderr=log)


if __name__ == "__main__":
    main()
