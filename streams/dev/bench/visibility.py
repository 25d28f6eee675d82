"""The latency benchmark's reader: when each outcome and each balance update became visible.

It runs in its own process, so the open-loop sender and it do not share an interpreter lock: a
reader that waited for the sender would add its wait to every latency. It tails
`ledger.outcomes` and `ledger.balances` read_committed (what a consumer of the ledger sees)
and notes the wall-clock time each batch arrived: per command id (outcome) and per event id.

An event's balances are visible with the first balance record as of it or of a later event of
the same loan: the batched projector publishes a key once per batch, at its value after the
batch, so an event whose record was superseded within its batch never appears as `as_of`. A
loan's events are projected in order, and a batch's records become visible together (one
transaction under exactly_once).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.synchronize import Event as EventFlag
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message
from confluent_kafka import TopicPartition as Partition

from schemas.topics import BALANCES, OUTCOMES
from streams.errors import LedgerError
from streams.settings import LedgerSettings

READY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Counters:
    """Shared with the parent: progress it can watch while the reader runs."""

    ready: EventFlag
    stop: EventFlag
    outcomes: Any  # multiprocessing Value('q'): outcomes of the expected commands seen
    balanced_events: Any  # Value('q'): expected posting events seen on balances


@contextmanager
def reading(
    settings: LedgerSettings,
    commands: frozenset[str],
    events: dict[str, list[str]],  # loan id -> its posting event ids in seq order
    output: Path,
) -> Iterator[Counters]:
    """A reader process, ready (assigned, fetching) on entry; on exit it stops and writes
    what it saw to `output` (JSON: outcomes by command id, balances by event id)."""
    spawn = multiprocessing.get_context("spawn")  # no fork of a process holding Kafka clients
    counters = Counters(spawn.Event(), spawn.Event(), spawn.Value("q", 0), spawn.Value("q", 0))
    topics = (settings.topic(OUTCOMES.name), settings.topic(BALANCES.name))
    arguments = (settings.bootstrap_servers, topics, settings.partitions, (commands, events))
    reader = spawn.Process(target=read_visibility, args=(*arguments, counters, output))
    reader.start()
    try:
        if not counters.ready.wait(READY_TIMEOUT_S):
            raise LedgerError("the visibility reader did not start within 30 s")
        yield counters
    finally:
        counters.stop.set()
        reader.join(timeout=60)


def read_visibility(
    bootstrap: str,
    topics: tuple[str, str],  # outcomes, balances
    partitions: int,
    expected: tuple[frozenset[str], dict[str, list[str]]],  # command ids, events by loan
    counters: Counters,
    output: Path,
) -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topics[0]}-bench-visibility",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 20,  # an idle topic answers fast when a record arrives
        }
    )
    consumer.assign([Partition(t, p, OFFSET_BEGINNING) for t in topics for p in range(partitions)])
    seen = Seen(topics[0], expected, counters)
    # Connected and fetching before the sender starts.
    seen.take(consumer.consume(1, timeout=1.0), time.time())
    counters.ready.set()
    while not counters.stop.is_set():
        seen.take(consumer.consume(10_000, timeout=0.05), time.time())
    consumer.close()
    output.write_bytes(orjson.dumps({"outcomes": seen.outcomes, "balances": seen.balances}))


class Seen:
    def __init__(
        self,
        outcomes_topic: str,
        expected: tuple[frozenset[str], dict[str, list[str]]],
        counters: Counters,
    ) -> None:
        self.outcomes_topic = outcomes_topic
        self.commands, self.by_loan = expected
        self.position = {
            event_id: (loan_id, n)
            for loan_id, event_ids in self.by_loan.items()
            for n, event_id in enumerate(event_ids)
        }
        self.visible_upto: dict[str, int] = {}  # loan id -> how many of its events are visible
        self.counters = counters
        self.outcomes: dict[str, float] = {}
        self.balances: dict[str, float] = {}

    def take(self, batch: list[Message], now: float) -> None:
        for message in batch:
            value = message.value()
            if message.error() is not None or value is None:
                continue
            record = orjson.loads(value)
            if message.topic() == self.outcomes_topic:
                self._outcome(record["command_id"], now)
            else:
                self._balance(record["as_of_event_id"], now)

    def _outcome(self, command_id: str, now: float) -> None:
        if command_id in self.commands and command_id not in self.outcomes:
            self.counters.outcomes.value += 1
        self.outcomes.setdefault(command_id, now)

    def _balance(self, event_id: str, now: float) -> None:
        where = self.position.get(event_id)
        if where is None:
            return
        loan_id, position = where
        start = self.visible_upto.get(loan_id, 0)
        for earlier in self.by_loan[loan_id][start : position + 1]:
            self.balances[earlier] = now
            self.counters.balanced_events.value += 1
        self.visible_upto[loan_id] = max(start, position + 1)
