"""Restore: how long a decider takes to take a partition of many loans, after a week and a year.

One partition holds `restore_loans` loans (the issue's loan: 12,000.00 CNY over 12 months, never
paid, one business day closed a day). Their snapshots are what the decider writes: the state the
pure core decided after 7 or 365 days, encoded by `ledger.snapshot`, one per loan (the bytes of
one loan's snapshot with the loan id substituted: the states differ only by it). After the
snapshots' mark the events partition holds a last batch, as a crash leaves it: the next business
day of one loan in twenty, really decided from its snapshot. The history before the mark is not
written (a year of it is 400 events a loan): a restore from snapshots never reads it, which the
"records read" figures show. `restore_partition`, the decider's own restore, is timed; then the
projector's (`BatchProjector.restore`) from its own snapshots of the same loans (each loan's share
of the balances, `ledger.snapshot.LoanBooks`, folded from the template's events) and the same
tail of events.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from confluent_kafka import Producer

from ledger import decide
from ledger.snapshot import decode_snapshot, encode_books, encode_snapshot
from schemas.events import encode_event
from schemas.topics import EVENTS, LOAN_STATES, PROJECTOR_STATES
from streams.dev.bench.context import Bench
from streams.dev.bench.core import PunctualLoan
from streams.dev.bench.results import Figure, Goal, Report, ratio
from streams.metrics import Metrics
from streams.settings import LedgerSettings
from streams.topics import ensure_topics
from streams.worker.projector import BatchProjector, PartitionBooks
from streams.worker.snapshots import COMMAND_OFFSET, restore_partition

SECTION = "restore"
TEMPLATE = "restore-template-0000000"  # as wide as every loan id below
TAIL_EVERY = 20  # one loan in this many has events after the mark


def _loan_id(number: int) -> str:
    return f"restore-loan-{number:012d}"


def run(bench: Bench, report: Report) -> None:
    loans = bench.sizes.restore_loans
    results = {}
    for label, days in (("one week", 7), ("one year", 365)):
        with bench.section(f"{SECTION}-{days}d") as settings:
            results[label] = _measure(bench, settings.model_copy(update={"partitions": 1}), days)
    week, year = results["one week"], results["one year"]
    for label, found in results.items():
        report.add(
            Figure(
                SECTION, f"restore {loans:,} loans with {label} of history", found["seconds"], "s",
                goal=Goal("<= 10 s", at_most=10) if label == "one year" else None,
                note=f"{found['snapshots']:,} snapshots + {found['events']:,} events read, "
                f"{found['snapshot_bytes']:,} bytes a snapshot",
            )
        )  # fmt: skip
    for label, found in results.items():
        report.add(
            Figure(
                SECTION, f"projector restore, {loans:,} loans with {label} of history",
                found["projector_seconds"], "s",
                goal=Goal("<= 10 s", at_most=10) if label == "one year" else None,
                note=f"{found['projector_records']:,} records read, "
                f"{found['projector_snapshot_bytes']:,} bytes a snapshot",
            )
        )  # fmt: skip
    slower = ratio(year["seconds"], week["seconds"])
    report.add(
        Figure(
            SECTION, "restore, one year vs one week", slower, "x", slower, "one week",
            Goal("<= 2x", at_most=2, of_ratio=True),
        )
    )  # fmt: skip
    report.details[SECTION] = {"loans": loans, **results}


def _measure(bench: Bench, settings: LedgerSettings, days: int) -> dict[str, float | int]:
    loans = bench.sizes.restore_loans
    ensure_topics(settings)
    template = PunctualLoan(TEMPLATE, term_months=12, keep_events=True)
    template.live(days, pays=False)
    snapshot = encode_snapshot(template.state, events_from=1, command_offset=loans)
    producer = Producer(settings.producer_config() | {"linger.ms": 50, "compression.type": "lz4"})
    # The events partition: one record before the mark (offset 0: a mark of 0 means "no
    # snapshots"), then the tail after it.
    events = settings.topic(EVENTS.name)
    producer.produce(events, b"{}", b"before-the-mark", partition=0)
    tail = 0
    for key, value in _tail(snapshot, loans, template):
        producer.produce(events, value, key, partition=0, headers=[(COMMAND_OFFSET, b"0")])
        tail += 1
    bench.console.print(f"restore: writing {loans:,} snapshots ({days} days) and {tail:,} events")
    states = settings.topic(LOAN_STATES.name)
    books = _books_template(template)
    projector_states = settings.topic(PROJECTOR_STATES.name)
    for number in range(loans):
        key = _loan_id(number).encode()
        _produce(producer, states, key, snapshot.replace(TEMPLATE.encode(), key))
        _produce(producer, projector_states, key, books.replace(TEMPLATE.encode(), key))
    producer.flush(120)
    started = time.perf_counter()
    restored = restore_partition(settings, 0, committed=loans + 1)
    seconds = time.perf_counter() - started
    assert restored.from_snapshots, "the restore did not start from the snapshots"
    assert len(restored.loans.states) == loans, "the restore is missing loans"
    started = time.perf_counter()
    projector = BatchProjector(settings, Metrics())
    projected = projector.restore(0, committed=1 + tail)
    projected.install()
    projector_seconds = time.perf_counter() - started
    assert len(projector.books[0].seqs.applied) == loans, "the projector is missing loans"
    return {
        "days": days,
        "seconds": seconds,
        "snapshots": restored.snapshots_read,
        "events": restored.events_read,
        "snapshot_bytes": len(snapshot),
        "projector_seconds": projector_seconds,
        "projector_records": projected.records,
        "projector_snapshot_bytes": len(books),
    }


def _books_template(template: PunctualLoan) -> bytes:
    """The projector's snapshot of the template loan, marked as the decider's."""
    books = PartitionBooks()
    for event in template.events or ():
        books.apply(event, 0)
    return encode_books(books.snapshot(TEMPLATE, events_from=1, events_offset=1))


def _tail(snapshot: bytes, loans: int, template: PunctualLoan) -> Iterator[tuple[bytes, bytes]]:
    """The next business day of one loan in TAIL_EVERY, decided from its snapshot."""
    close = template.next_close()
    for number in range(0, loans, TAIL_EVERY):
        loan_id = _loan_id(number)
        found = decode_snapshot(snapshot.replace(TEMPLATE.encode(), loan_id.encode()))
        assert found is not None
        assert found.state is not None
        command = close.model_copy(
            update={"loan_id": loan_id, "command_id": f"{close.command_id}-{number}"}
        )
        for event in decide(found.state, command).events:
            yield loan_id.encode(), encode_event(event)


def _produce(producer: Producer, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value, key, partition=0)
            return
        except BufferError:
            producer.poll(0.05)
