"""The projector: events -> per-account balances on the compacted `ledger.balances` topic.

An event is applied only if its `seq` is the next one for its loan: duplicates are dropped, a gap
stops that loan and raises an alert. Balances of shared accounts are kept per events partition
(see `schemas.balances.BalanceRecord`), so no partition funnels every posting.
"""

from __future__ import annotations

import asyncio
import logging
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
    progress: Any  # faust Table: loan_id -> last applied seq (GAP once stopped)
    balances: Any  # faust Table: balance key -> [balance_minor, currency]
    balance_topic: Any  # faust Topic ledger.balances
    dlq: Any
    producer: Any
    metrics: Metrics


async def handle_event(ports: ProjectorPorts, record: Record) -> None:
    event = await _parse_or_dead_letter(ports, record)
    if event is None:
        return
    applied = ports.progress.get(event.loan_id, 0)
    if applied == GAP:
        return
    if event.seq <= applied:
        ports.metrics.duplicates.inc()
        return
    if event.seq > applied + 1:
        _stop_loan(ports, event, applied)
        await ports.producer.buffer.flush()
        return
    records = _fold_postings(ports, event, record.partition)
    # 1. Publish the new balances and wait for the acks. 2. Only then record the event as
    #    applied, so a crash in between re-applies it instead of losing its balance records.
    await _publish(ports, records, record.partition)
    ports.progress[event.loan_id] = event.seq
    await ports.producer.buffer.flush()
    ports.metrics.projected.inc()


def _fold_postings(ports: ProjectorPorts, event: Event, partition: int) -> list[BalanceRecord]:
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
            balance, currency = ports.balances.get(key, (0, posting.currency))
            assert currency == posting.currency, (
                f"{account} holds {currency}, posting in {posting.currency}"
            )
            ports.balances[key] = (balance + delta, currency)
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
    ports.progress[event.loan_id] = GAP
    ports.metrics.gaps.inc()
    log.error(
        "ALERT seq gap: loan %s expected seq %d, got %d (event %s); the loan is stopped. "
        "Find the missing events with `ledger history %s`, then rebuild with `ledger replay`.",
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
