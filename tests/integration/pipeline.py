"""Integration harness: real `ledger worker` processes on a real broker, and independent checks.

The checks never trust the processors: balances are re-folded from the raw bytes of
`ledger.events` with the json module alone, and the expected events come from an oracle that runs
each loan's commands through the pure core in order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from schemas.commands import CloseBusinessDayForPartition, Command
from streams.client import TICK_KEY
from streams.dev import LEDGER
from streams.settings import LedgerSettings
from tests.integration.kafka_helpers import unique

RawRecord = tuple[bytes | None, bytes | None, int, int]  # key, value, partition, offset


@dataclass
class Pipeline:
    bootstrap: str
    guarantee: str
    workdir: Path
    partitions: int = 4
    prefix: str = field(default_factory=lambda: unique("it") + ".")
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    launches: dict[str, tuple[tuple[str, ...], dict[str, str]]] = field(default_factory=dict)
    stopped: set[str] = field(default_factory=set)
    restarts: list[tuple[str, int]] = field(default_factory=list)
    _supervisor: threading.Thread | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)

    @cached_property  # building settings reads the environment: too slow per record
    def settings(self) -> LedgerSettings:
        return LedgerSettings(
            bootstrap_servers=self.bootstrap, topic_prefix=self.prefix, partitions=self.partitions
        )

    def environment(self, name: str) -> dict[str, str]:
        return os.environ | {
            "LEDGER_BOOTSTRAP_SERVERS": self.bootstrap,
            "LEDGER_TOPIC_PREFIX": self.prefix,
            "LEDGER_PARTITIONS": str(self.partitions),
            "LEDGER_PROCESSING_GUARANTEE": self.guarantee,
            "LEDGER_INSTANCE_ID": name,
            "LEDGER_LOG_LEVEL": "info",
        }

    def start_worker(self, name: str = "w1", **settings: str) -> None:
        """Start `ledger worker`; `settings` are extra LEDGER_* values (metrics_port="9100")."""
        self.start_process(name, ("worker",), **settings)

    def start_process(self, name: str, arguments: tuple[str, ...], **settings: str) -> None:
        """Start `ledger <arguments>` under supervision, e.g. ("gateway",)."""
        self.launches[name] = (arguments, settings)
        log = (self.workdir / f"{name}.log").open("ab")
        command = [*arguments] if arguments[0] == sys.executable else [*LEDGER, *arguments]
        extra = {f"LEDGER_{key.upper()}": value for key, value in settings.items()}
        environment = self.environment(name) | extra
        self.workers[name] = subprocess.Popen(command, env=environment, stdout=log, stderr=log)

    def restart(self, name: str) -> None:
        arguments, settings = self.launches[name]
        self.stopped.discard(name)
        self.start_process(name, arguments, **settings)

    def supervise(self) -> None:
        """Restart any worker that exits unless a test stopped it, as a process supervisor
        (systemd, Kubernetes) would; every restart is recorded in `restarts`."""

        def loop() -> None:
            while not self._stopping.wait(0.5):
                for name, process in list(self.workers.items()):
                    code = process.poll()
                    if code is not None and name not in self.stopped:
                        self.restarts.append((name, code))
                        self.restart(name)

        self._supervisor = threading.Thread(target=loop, daemon=True)
        self._supervisor.start()

    def signal_worker(self, name: str, signum: int, *, for_good: bool = False) -> None:
        if for_good:
            self.stopped.add(name)
        process = self.workers[name]
        process.send_signal(signum)
        if signum in (signal.SIGKILL, signal.SIGTERM):
            process.wait(timeout=90)

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join()
        for process in self.workers.values():
            if process.poll() is None:
                process.terminate()
        for process in self.workers.values():
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                process.kill()

    def log_tail(self, lines: int = 60) -> str:
        tails = []
        for name in self.workers:
            text = (self.workdir / f"{name}.log").read_text(errors="replace").splitlines()
            tails.append(
                f"--- {name} ---\n"
                + "\n".join(line for line in text[-lines:] if not line.startswith("%"))
            )
        return "\n".join(tails)

    def send(
        self,
        commands: Iterable[Command | CloseBusinessDayForPartition],
        producer: Producer | None = None,
    ) -> int:
        """Each command keyed by its loan id; a business-day tick to the partition it names."""
        producer = producer or Producer(self.settings.producer_config())
        count = 0
        for command in commands:
            value = command.model_dump_json().encode()
            if isinstance(command, CloseBusinessDayForPartition):
                self.send_raw(producer, TICK_KEY, value, command.partition)
            else:
                self.send_raw(producer, command.loan_id.encode(), value)
            count += 1
        producer.flush(60)
        return count

    def send_over(
        self,
        commands: list[Command | CloseBusinessDayForPartition],
        seconds: float,
        producer: Producer | None = None,
    ) -> None:
        """Commands in chunks of 50 spread over `seconds`, as a steady upstream would send."""
        producer = producer or Producer(self.settings.producer_config())
        chunk = 50
        pause = seconds / max(1, len(commands) / chunk)
        for start in range(0, len(commands), chunk):
            self.send(commands[start : start + chunk], producer)
            time.sleep(pause)

    def send_raw(
        self, producer: Producer, key: bytes | None, value: bytes, partition: int | None = None
    ) -> None:
        topic = self.settings.topic("ledger.commands")
        while True:
            try:
                if partition is None:
                    producer.produce(topic, key=key, value=value)
                else:
                    producer.produce(topic, key=key, value=value, partition=partition)
                return
            except BufferError:
                producer.poll(0.1)

    def read(self, base_topic: str, until: int = 0, timeout_s: float = 120.0) -> list[RawRecord]:
        """Every committed record of a topic; waits until at least `until` are there."""
        return read_topic(
            self.bootstrap, self.settings.topic(base_topic), self.partitions, until, timeout_s
        )

    def wait_for_outcomes(
        self, command_ids: set[str], timeout_s: float = 240.0
    ) -> dict[str, list[bytes]]:
        deadline = time.monotonic() + timeout_s
        while True:
            outcomes = outcomes_by_command(self.read("ledger.outcomes"))
            missing = command_ids - outcomes.keys()
            if not missing:
                return outcomes
            if time.monotonic() > deadline:
                example = sorted(missing)[:5]
                raise AssertionError(
                    f"{len(missing)} commands without outcome, e.g. {example}\n{self.log_tail()}"
                )
            time.sleep(1)

    def wait_for_balances(
        self, expected: dict[str, int], timeout_s: float = 120.0
    ) -> dict[str, int]:
        """The balances topic's view once it equals `expected` (or the last view, on timeout)."""
        deadline = time.monotonic() + timeout_s
        while True:
            published = balances_from_topic(self.read("ledger.balances"))
            if published == expected or time.monotonic() > deadline:
                return published
            time.sleep(1)


def read_topic(
    bootstrap: str, topic: str, partitions: int, until: int, timeout_s: float
) -> list[RawRecord]:
    """Every committed record of `topic`, once each partition is read to its end and at least
    `until` records are there; fails after `timeout_s` rather than return a part.

    The end of a partition is librdkafka's PARTITION_EOF, not a quiet moment: a quiet half
    second on a loaded machine once ended the read early, and a prefix of the events log made a
    balances check fail. Under read_committed the EOF comes at the last stable offset, past the
    transaction markers no record carries (librdkafka#2928), so offsets cannot tell it.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("checker"),
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    records: list[RawRecord] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while len(at_end) < partitions or len(records) < until:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{topic}: {len(records)} records read in {timeout_s:.0f} s (waiting for "
                    f"{until}); partitions at their end: {sorted(at_end)} of {partitions}"
                )
            for message in consumer.consume(num_messages=5000, timeout=0.5):
                _take(message, records, at_end)
    finally:
        consumer.close()
    return records


def _take(message: Message, records: list[RawRecord], at_end: set[int]) -> None:
    """A record joins `records`; an end-of-partition event marks its partition read."""
    partition, offset, error = message.partition(), message.offset(), message.error()
    assert partition is not None
    if error is None and offset is not None:
        records.append((message.key(), message.value(), partition, offset))
        at_end.discard(partition)
    elif error is not None and error.code() == KafkaError._PARTITION_EOF:
        at_end.add(partition)


def outcomes_by_command(records: list[RawRecord]) -> dict[str, list[bytes]]:
    found: dict[str, list[bytes]] = defaultdict(list)
    for _key, value, _partition, _offset in records:
        assert value is not None
        found[json.loads(value)["command_id"]].append(value)
    return found


@dataclass
class LogFold:
    """An independent fold of raw `ledger.events` bytes: json only, no ledger code."""

    balances: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    by_seq: dict[tuple[str, int], bytes] = field(default_factory=dict)
    repeated_identical: int = 0
    conflicting_repeats: list[tuple[str, int]] = field(default_factory=list)

    def fold(self, records: list[RawRecord]) -> LogFold:
        for _key, value, _partition, _offset in sorted(records, key=lambda r: (r[2], r[3])):
            assert value is not None
            event = json.loads(value)
            slot = (event["loan_id"], event["seq"])
            if slot in self.by_seq:
                if self.by_seq[slot] == value:
                    self.repeated_identical += 1
                else:
                    self.conflicting_repeats.append(slot)
                continue
            self.by_seq[slot] = value
            for posting in event["postings"]:
                self.balances[posting["debit"]] += posting["amount_minor"]
                self.balances[posting["credit"]] -= posting["amount_minor"]
        return self

    def seq_gaps(self) -> list[str]:
        seqs: dict[str, list[int]] = defaultdict(list)
        for loan, seq in self.by_seq:
            seqs[loan].append(seq)
        return [
            loan for loan, found in seqs.items() if sorted(found) != list(range(1, len(found) + 1))
        ]


def balances_from_topic(records: list[RawRecord]) -> dict[str, int]:
    """Latest record per key; shards of a shared account summed into the account."""
    latest: dict[bytes, dict[str, object]] = {}
    for key, value, _partition, _offset in sorted(records, key=lambda r: (r[2], r[3])):
        assert key is not None
        assert value is not None
        latest[key] = json.loads(value)
    totals: dict[str, int] = defaultdict(int)
    for record in latest.values():
        balance = record["balance_minor"]
        assert isinstance(balance, int)
        totals[str(record["account"])] += balance
    return dict(totals)


def nonzero(balances: dict[str, int]) -> dict[str, int]:
    return {account: amount for account, amount in balances.items() if amount != 0}
