"""The projector as a batch stage: events -> balances, one record per touched account per batch.

`ledger.balances` is compacted: only an account's latest record matters, so a batch publishes
each touched balance once, at its value after the batch. Progress (the seq rule's tracker,
`ledger.sequence`) and balances live in memory. A gap, or an unreadable event under a loan's key,
quarantines that loan: its later events are not projected, the alert is logged and counted, and
the rest of the partition goes on. The unreadable record is also dead-lettered.

Snapshots, as the decider's (`streams.worker.snapshots`): each checkpoint writes, for every loan a
batch moved, its share of every balance key and the seq it reflects to `ledger.projector-states`
(`ledger.snapshot.LoanBooks`), with the mark `events_from`. A restore sums the loans' shares into
the partition's balances and folds only the events from the last record's mark, by the seq rule;
with no usable record it folds the partition's whole events log and writes every loan again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from confluent_kafka import Message
from pydantic import ValidationError

from ledger.balances import project_postings
from ledger.sequence import Quarantine, SeqTracker, Verdict
from ledger.snapshot import LoanBooks, decode_books, encode_books
from schemas.balances import BalanceRecord
from schemas.events import Event, parse_event
from schemas.topics import BALANCES, DLQ, EVENTS, PROJECTOR_STATES
from streams.dlq import dead_letter_headers
from streams.metrics import Metrics
from streams.settings import LedgerSettings
from streams.worker.loop import Output, Restoration
from streams.worker.restore import events_to_restore
from streams.worker.snapshots import Checkpoints, decode_record, read_marked

log = logging.getLogger(__name__)


@dataclass
class PartitionBooks:
    """One events partition's progress per loan and balance per balance key, and each loan's
    share of those balances (what its snapshot holds)."""

    seqs: SeqTracker = field(default_factory=SeqTracker)
    balances: dict[str, tuple[int, str]] = field(default_factory=dict)
    moves: dict[str, dict[str, int]] = field(default_factory=dict)

    def apply(self, event: Event, partition: int) -> tuple[Verdict, list[BalanceRecord]]:
        """The seq rule's verdict on the event, and the balance records it changes."""
        verdict = self.seqs.admit(event.loan_id, event.seq)
        if verdict is not Verdict.NEXT:
            return verdict, []
        loan_moves = self.moves.setdefault(event.loan_id, {})
        return verdict, project_postings(self.balances, event, partition, loan_moves)

    def resume(self, books: LoanBooks) -> None:
        """Take a loan in as its snapshot left it."""
        self.seqs.applied[books.loan_id] = books.seq
        if books.quarantine is not None:
            self.seqs.quarantined[books.loan_id] = books.quarantine
        self.moves[books.loan_id] = {key: amount for key, (amount, _c) in books.moves.items()}
        for key, (amount, currency) in books.moves.items():
            balance, held = self.balances.get(key, (0, currency))
            assert held == currency, f"{key} holds {held}, {books.loan_id}'s share is in {currency}"
            self.balances[key] = (balance + amount, currency)

    def snapshot(self, loan_id: str, events_from: int, events_offset: int) -> LoanBooks:
        moves = self.moves.get(loan_id, {})
        return LoanBooks(
            loan_id=loan_id,
            seq=self.seqs.applied.get(loan_id, 0),
            events_from=events_from,
            events_offset=events_offset,
            moves={key: (amount, self.balances[key][1]) for key, amount in moves.items()},
            quarantine=self.seqs.quarantined.get(loan_id),
        )


@dataclass
class BatchProjector:
    settings: LedgerSettings
    metrics: Metrics
    input_topic: str = ""
    books: dict[int, PartitionBooks] = field(default_factory=dict)
    checkpoints: dict[int, Checkpoints] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.input_topic = self.settings.topic(EVENTS.name)
        self._balances = self.settings.topic(BALANCES.name)
        self._states = self.settings.topic(PROJECTOR_STATES.name)
        self._dlq = self.settings.topic(DLQ.name)

    def restore(self, partition: int, committed: int) -> Restoration:
        books, read, latest = PartitionBooks(), 0, dict[str, LoanBooks]()
        marked = read_marked(
            self.settings, PROJECTOR_STATES.name, partition, lambda m: _latest(latest, m)
        )
        start = 0 if marked is None else marked.start
        if marked is not None:  # else a record was unusable, or none: the whole log instead
            for snapshot in latest.values():
                books.resume(snapshot)
        touched: dict[str, None] = {}
        with events_to_restore(self.settings, partition, stop=committed, start=start) as reader:
            for batch in reader.batches():
                read += len(batch)
                for message in batch:
                    _event, verdict, _records = self._fold(books, message)  # alerts: when seen
                    if verdict in (Verdict.NEXT, Verdict.GAP, Verdict.QUARANTINED):
                        touched[_loan_of(message)] = None
        if start == 0:  # a baseline: every loan is written again
            touched = dict.fromkeys(books.seqs.applied | books.seqs.quarantined)
        checkpoints = Checkpoints(committed, start, committed, touched)
        log.info(
            "projector: partition %d read, %d loans from %d snapshots and %d events",
            partition, len(books.seqs.applied), 0 if marked is None else marked.read, read,
        )  # fmt: skip
        records = read + (0 if marked is None else marked.read)
        return Restoration(records, lambda: self._install(partition, books, checkpoints))

    def _install(self, partition: int, books: PartitionBooks, checkpoints: Checkpoints) -> None:
        self.books[partition] = books
        self.checkpoints[partition] = checkpoints

    def forget(self, partitions: list[int]) -> None:
        for partition in partitions:
            self.books.pop(partition, None)
            self.checkpoints.pop(partition, None)

    def checkpoint(self, force: bool = False) -> list[Output]:
        """The snapshots of the loans moved since the last checkpoint (a chunk per partition).
        Called once a batch's offsets are committed, or inside its transaction."""
        outputs: list[Output] = []
        for partition, checkpoints in self.checkpoints.items():
            books = self.books[partition]
            taken, events_from = checkpoints.take()
            for loan_id in taken:
                snapshot = books.snapshot(loan_id, events_from, checkpoints.command_offset)
                value = encode_books(snapshot)
                outputs.append(Output(self._states, partition, loan_id.encode(), value))
        return outputs

    def written(self, topic: str, partition: int, offset: int) -> None:
        pass

    def handle(self, batch: list[Message]) -> list[Output]:
        for checkpoints in self.checkpoints.values():
            checkpoints.batch_begins()
        latest: dict[tuple[int, str], BalanceRecord] = {}
        dead: list[Output] = []
        for message in batch:
            partition = message.partition() or 0
            books = self.books[partition]
            checkpoints = self.checkpoints[partition]
            checkpoints.events_end = checkpoints.command_offset = (message.offset() or 0) + 1
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
            if verdict in (Verdict.NEXT, Verdict.GAP, Verdict.QUARANTINED):
                checkpoints.touched[_loan_of(message)] = None
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


def _latest(latest: dict[str, LoanBooks], message: Message) -> tuple[int, int] | None:
    """One snapshot record into `latest` (a loan's later record replaces its earlier one): its
    mark and offset, or None if it is unusable."""
    snapshot = decode_record(message, decode_books)
    if snapshot is None:
        return None
    latest[snapshot.loan_id] = snapshot
    return snapshot.events_from, snapshot.events_offset


def _loan_of(message: Message) -> str:
    """The loan a record belongs to, by its key (events are keyed by loan_id)."""
    return (message.key() or b"").decode(errors="replace")
