"""The projector: events -> per-account balances on the compacted `ledger.balances` topic.

An event is applied only if its `seq` is the next one for its loan: duplicates are dropped, a gap
stops that loan and raises an alert. Balances of shared accounts are kept per events partition
(see `schemas.balances.BalanceRecord`), so no partition funnels every posting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from schemas.balances import BalanceRecord, is_shared
from schemas.events import Event, parse_event
from streams.decider import Record
from streams.dlq import send_dead_letter
from streams.metrics import Metrics

log = logging.getLogger(__name__)
GAP = -1  # stored as a loan's progress once a gap stopped it


@dataclass(frozen=True)
class ProjectorPorts:
    progress: (
        Any  # faust Table: loan_id -> [last applied seq, its offset] ([GAP, None] once stopped)
    )
    balances: Any  # faust Table: balance key -> [balance_minor, currency]
    balance_topic: Any  # faust Topic ledger.balances
    dlq: Any
    read_back: Callable[[str, int, int, int], Awaitable[list[Record]]]
    metrics: Metrics


async def handle_event(ports: ProjectorPorts, record: Record) -> None:
    event = await _parse_or_dead_letter(ports, record)
    if event is None:
        return
    applied_seq, applied_offset = _progress(ports, event.loan_id)
    if applied_seq == GAP:
        return
    if event.seq <= applied_seq:
        ports.metrics.duplicates.inc()
        return
    if event.seq > applied_seq + 1:
        missing = await _read_missing(ports, record, event, applied_seq, applied_offset)
        if missing is None:
            _stop_loan(ports, event, applied_seq)
            return
        for earlier_record, earlier in missing:
            await _apply(ports, earlier_record, earlier)
    await _apply(ports, record, event)


async def _apply(ports: ProjectorPorts, record: Record, event: Event) -> None:
    records = _fold_postings(ports, event, record.partition)
    # 1. Publish the new balances and wait for the acks. 2. Only then record the event as
    #    applied, so a crash in between re-applies it instead of losing its balance records.
    await _publish(ports, records, record.partition)
    ports.progress[event.loan_id] = [event.seq, record.offset]
    ports.metrics.projected.inc()


def _progress(ports: ProjectorPorts, loan_id: str) -> tuple[int, int | None]:
    """(last applied seq, its offset); (0, None) for a loan never seen."""
    entry = ports.progress.get(loan_id)
    if entry is None:
        return 0, None
    return int(entry[0]), (None if entry[1] is None else int(entry[1]))


async def _read_missing(
    ports: ProjectorPorts,
    record: Record,
    event: Event,
    applied_seq: int,
    applied_offset: int | None,
) -> list[tuple[Record, Event]] | None:
    """The loan's events between the last applied one and `event`, read back from the log.
    They are there unless the log itself has a hole: a table update lost by faust under
    exactly_once (faust-streaming#517 family) or records it skipped leave the log intact."""
    start = 0 if applied_offset is None else applied_offset + 1
    wanted = range(applied_seq + 1, event.seq)
    found: dict[int, tuple[Record, Event]] = {}
    for earlier_record in await ports.read_back(
        record.topic, record.partition, start, record.offset
    ):
        if earlier_record.key != event.loan_id.encode():
            continue
        earlier = parse_event(earlier_record.value or b"")
        if earlier.seq in wanted and earlier.seq not in found:
            found[earlier.seq] = (earlier_record, earlier)
    if sorted(found) != list(wanted):
        return None
    ports.metrics.repaired.inc(len(found))
    log.warning(
        "repaired loan %s: seq %d..%d read back from the log",
        event.loan_id,
        wanted.start,
        wanted.stop - 1,
    )
    return [found[seq] for seq in wanted]


def _fold_postings(ports: ProjectorPorts, event: Event, partition: int) -> list[BalanceRecord]:
    return fold_postings(ports.balances, event, partition)


def fold_postings(
    balances: MutableMapping[str, tuple[int, str]], event: Event, partition: int
) -> list[BalanceRecord]:
    """Add the event's postings to `balances` (balance key -> (balance, currency)); return the
    new balance record of every account touched. Shared accounts are kept per `partition`."""
    touched: dict[str, BalanceRecord] = {}
    for posting in event.postings:
        # Balanced by construction; asserted again on this side of the wire.
        assert posting.amount_minor > 0, f"non-positive posting in {event.event_id}"
        assert posting.debit != posting.credit, f"self-transfer in {event.event_id}"
        for account, delta in (
            (posting.debit, posting.amount_minor),
            (posting.credit, -posting.amount_minor),
        ):
            shard = partition if is_shared(account) else None
            key = account if shard is None else f"{account}@{shard}"
            balance, currency = balances.get(key, (0, posting.currency))
            assert currency == posting.currency, (
                f"{account} holds {currency}, posting in {posting.currency}"
            )
            balances[key] = (balance + delta, currency)
            touched[key] = BalanceRecord(
                account=account,
                balance_minor=balance + delta,
                currency=currency,
                as_of_event_id=event.event_id,
                shard=shard,
            )
    return list(touched.values())


async def _publish(ports: ProjectorPorts, records: list[BalanceRecord], partition: int) -> None:
    pending = [
        await ports.balance_topic.send(
            key=record.key.encode(), value=record.model_dump_json().encode(), partition=partition
        )
        for record in records
    ]
    await asyncio.gather(*pending)


def _stop_loan(ports: ProjectorPorts, event: Event, applied: int) -> None:
    ports.progress[event.loan_id] = [GAP, None]
    ports.metrics.gaps.inc()
    log.error(
        "ALERT seq gap: loan %s expected seq %d, got %d (event %s), and the log does not hold "
        "the missing events; the loan is stopped. Inspect it with `ledger history %s`.",
        event.loan_id, applied + 1, event.seq, event.event_id, event.loan_id,
    )  # fmt: skip


async def _parse_or_dead_letter(ports: ProjectorPorts, record: Record) -> Event | None:
    try:
        return parse_event(record.value or b"")
    except ValidationError as error:
        ports.metrics.dead_letters.labels(source="events", error="invalid").inc()
        await send_dead_letter(
            ports.dlq, record.key, record.value, f"invalid event: {error.errors()[0]['msg']}",
            record.topic, record.partition, record.offset,
        )  # fmt: skip
        return None
