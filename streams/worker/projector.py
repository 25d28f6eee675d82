"""The projector as a batch stage: events -> balances, one record per touched account per batch.

`ledger.balances` is compacted: only an account's latest record matters, so a batch publishes
each touched balance once, at its value after the batch. Progress (the seq rule's tracker,
`ledger.sequence`) and balances live in memory and are rebuilt by folding the partition's events
below the committed offset. A gap, or an unreadable event under a loan's key, quarantines that
loan: its later events are not projected, the alert is logged and counted, and the rest of the
partition goes on. The unreadable record is also dead-lettered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from confluent_kafka import Message
from pydantic import ValidationError

from ledger.balances import project_postings
from ledger.sequence import Quarantine, SeqTracker, Verdict
from schemas.balances import BalanceRecord
from schemas.events import Event, parse_event
from schemas.topics import BALANCES, DLQ, EVENTS
from streams.dlq import dead_letter_headers
from streams.metrics import Metrics
from streams.settings import LedgerSettings
from streams.worker.loop import Output, Restoration
from streams.worker.restore import events_to_restore

log = logging.getLogger(__name__)


@dataclass
class PartitionBooks:
    """One events partition's progress per loan and balance per balance key."""

    seqs: SeqTracker = field(default_factory=SeqTracker)
    balances: dict[str, tuple[int, str]] = field(default_factory=dict)

    def apply(self, event: Event, partition: int) -> tuple[Verdict, list[BalanceRecord]]:
        """The seq rule's verdict on the event, and the balance records it changes."""
        verdict = self.seqs.admit(event.loan_id, event.seq)
        if verdict is not Verdict.NEXT:
            return verdict, []
        return verdict, project_postings(self.balances, event, partition)


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

    def restore(self, partition: int, committed: int) -> Restoration:
        books, read = PartitionBooks(), 0
        with events_to_restore(self.settings, partition, stop=committed) as reader:
            for batch in reader.batches():
                read += len(batch)
                for message in batch:
                    self._fold(books, message)  # alerts were raised when first seen
        return Restoration(read, lambda: self.books.__setitem__(partition, books))

    def forget(self, partitions: list[int]) -> None:
        for partition in partitions:
            self.books.pop(partition, None)

    def checkpoint(self, force: bool = False) -> list[Output]:
        return []  # its restore still folds the events below its committed offset

    def written(self, topic: str, partition: int, offset: int) -> None:
        pass

    def handle(self, batch: list[Message]) -> list[Output]:
        latest: dict[tuple[int, str], BalanceRecord] = {}
        dead: list[Output] = []
        for message in batch:
            partition = message.partition() or 0
            books = self.books[partition]
            event, verdict, records = self._fold(books, message)
            if event is None:
                dead.append(self._dead_letter(message))
                self._alert(books.seqs.quarantined[_loan_of(message)], "unreadable")
            elif verdict is Verdict.GAP:
                self.metrics.gaps.inc()
                self._alert(books.seqs.quarantined[event.loan_id], "gap")
            elif verdict is Verdict.REPEAT:
                self.metrics.duplicates.inc()
            elif verdict is Verdict.NEXT:
                self.metrics.projected.inc()
            for record in records:
                latest[(partition, record.key)] = record
        return dead + [
            Output(self._balances, partition, key.encode(), record.model_dump_json().encode())
            for (partition, key), record in latest.items()
        ]

    def _fold(
        self, books: PartitionBooks, message: Message
    ) -> tuple[Event | None, Verdict, list[BalanceRecord]]:
        try:
            event = parse_event(message.value() or b"")
        except ValidationError:
            books.seqs.unreadable(_loan_of(message))
            return None, Verdict.QUARANTINED, []
        verdict, records = books.apply(event, message.partition() or 0)
        return event, verdict, records

    def _alert(self, quarantine: Quarantine, why: str) -> None:
        self.metrics.quarantined.labels(stage="projector", why=why).inc()
        log.error(
            "ALERT loan quarantined by the projector: %s; its balances are no longer updated "
            "(docs/operating.md, 'Quarantined loans'). Inspect it with `ledger history %s`.",
            quarantine.describe(), quarantine.loan_id,
        )  # fmt: skip

    def _dead_letter(self, message: Message) -> Output:
        partition, offset = message.partition() or 0, message.offset() or 0
        headers = dead_letter_headers("invalid event", self.input_topic, partition, offset)
        self.metrics.dead_letters.labels(source="events", error="invalid").inc()
        return Output(self._dlq, partition, message.key(), message.value() or b"", headers)


def _loan_of(message: Message) -> str:
    """The loan a record belongs to, by its key (events are keyed by loan_id)."""
    return (message.key() or b"").decode(errors="replace")
