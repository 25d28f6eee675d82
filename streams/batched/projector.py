"""The projector as a batch stage: events -> balances, one record per touched account per batch.

`ledger.balances` is compacted: only an account's latest record matters, so a batch publishes
each touched balance once, at its value after the batch (the faust projector publishes one
record per posting). Progress (last applied `seq` per loan) and balances live in memory and are
rebuilt by folding the partition's events below the committed offset.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from confluent_kafka import Message
from pydantic import ValidationError

from schemas.balances import BalanceRecord
from schemas.events import Event, parse_event
from schemas.topics import BALANCES, DLQ, EVENTS
from streams.batched.loop import Output
from streams.dlq import dead_letter_headers
from streams.logread import LogReader
from streams.metrics import Metrics
from streams.projector import GAP, fold_postings
from streams.settings import LedgerSettings

log = logging.getLogger(__name__)


@dataclass
class PartitionBooks:
    """One events partition's progress per loan and balance per balance key."""

    progress: dict[str, int] = field(default_factory=dict)
    balances: dict[str, tuple[int, str]] = field(default_factory=dict)

    def apply(self, event: Event, partition: int) -> list[BalanceRecord] | None:
        """The balance records the event changes; None when it is not the loan's next event
        (a repeat, or past a gap)."""
        applied = self.progress.get(event.loan_id, 0)
        if applied == GAP or event.seq <= applied:
            return None
        if event.seq > applied + 1:
            # Read in offset order from a committed position, a missing seq is a hole in the
            # log itself: stop the loan and raise the alert, as the faust projector does.
            self.progress[event.loan_id] = GAP
            log.error(
                "ALERT seq gap: loan %s expected seq %d, got %d (event %s); the loan is "
                "stopped. Inspect it with `ledger history %s`.",
                event.loan_id, applied + 1, event.seq, event.event_id, event.loan_id,
            )  # fmt: skip
            return None
        self.progress[event.loan_id] = event.seq
        return fold_postings(self.balances, event, partition)


@dataclass
class BatchProjector:
    settings: LedgerSettings
    metrics: Metrics
    input_topic: str = ""
    books: dict[int, PartitionBooks] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.input_topic = self.settings.topic(EVENTS.name)
        self._balances = self.settings.topic(BALANCES.name)
        self._dlq = self.settings.topic(DLQ.name)

    def rebuild(self, committed: dict[int, int]) -> None:
        for partition, offset in committed.items():
            books = PartitionBooks()
            stops = {partition: offset}
            reader = LogReader(
                self.settings,
                EVENTS.name,
                stops=stops,
                partitions=[partition],
                whole_transactions=True,
            )
            with reader as r:
                for batch in r.batches():
                    for message in batch:
                        event = _parse(message)
                        if event is not None:
                            books.apply(event, partition)
            self.books[partition] = books

    def forget(self, partitions: list[int]) -> None:
        for partition in partitions:
            self.books.pop(partition, None)

    def handle(self, batch: list[Message]) -> list[Output]:
        latest: dict[tuple[int, str], BalanceRecord] = {}
        dead: list[Output] = []
        for message in batch:
            partition = message.partition() or 0
            event = _parse(message)
            if event is None:
                dead.append(self._dead_letter(message))
                continue
            records = self.books[partition].apply(event, partition)
            if records is None:
                self.metrics.duplicates.inc()
                continue
            self.metrics.projected.inc()
            for record in records:
                latest[(partition, record.key)] = record
        return dead + [
            Output(self._balances, partition, key.encode(), record.model_dump_json().encode())
            for (partition, key), record in latest.items()
        ]

    def _dead_letter(self, message: Message) -> Output:
        partition, offset = message.partition() or 0, message.offset() or 0
        headers = dead_letter_headers("invalid event", self.input_topic, partition, offset)
        self.metrics.dead_letters.labels(source="events", error="invalid").inc()
        return Output(self._dlq, partition, message.key(), message.value() or b"", headers)


def _parse(message: Message) -> Event | None:
    try:
        return parse_event(message.value() or b"")
    except ValidationError:
        return None
