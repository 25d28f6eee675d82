"""The decider: commands -> `decide` -> events and exactly one outcome; loan state in a table.

It is the only writer of `ledger.events`. Every output goes to the partition the command came
from (commands, events and outcomes are co-partitioned), so under exactly_once it rides in the
same transaction as the command's offset (faust-streaming#177 bites only cross-partition sends).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from ledger import LoanState, Policy, decide, evolve, initial_state
from schemas.commands import Command, parse_command
from schemas.events import encode_event
from schemas.outcomes import Outcome, RejectionReason, rejected
from streams.dlq import send_dead_letter
from streams.metrics import Metrics


class StoredLoan(BaseModel):
    """A table entry: the state, and the offset of the last command folded into it."""

    offset: int
    state: LoanState


@dataclass(frozen=True)
class Record:
    """What the decider needs of one Kafka record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class DeciderPorts:
    """The faust objects the decider writes to; built by `streams.app.make_app`."""

    loans: Any  # faust Table: loan_id -> StoredLoan as JSON text
    events: Any  # faust Topic ledger.events
    outcomes: Any  # faust Topic ledger.outcomes
    dlq: Any  # faust Topic ledger.dlq
    policy: Policy
    max_message_bytes: int
    metrics: Metrics


async def handle_command(ports: DeciderPorts, record: Record) -> None:
    command = await _parse_or_dead_letter(ports, record)
    if command is None:
        return
    stored = _load(ports, command.loan_id)
    if stored is not None and stored.offset >= record.offset:
        # Redelivered after a crash, already folded into the state: its outputs were acked
        # before the state was stored, so there is nothing left to do.
        return
    state = stored.state if stored is not None else initial_state(command.loan_id)
    decision = decide(state, command, ports.policy)
    # 1. Produce the events and the outcome and wait for the broker's acks.
    await _produce(ports, record, command.loan_id, decision.events, decision.outcome)
    # 2. Fold the events. 3. Store the state: only now, so a stored state never runs ahead of
    #    the events in the log (a crash before this line re-decides into identical bytes).
    for event in decision.events:
        state = evolve(state, event)
    stored_now = StoredLoan(offset=record.offset, state=state)
    ports.loans[command.loan_id] = stored_now.model_dump_json()
    _count(ports.metrics, command, decision.outcome, decision.events)


def _load(ports: DeciderPorts, loan_id: str) -> StoredLoan | None:
    # JSON text (a str): faust's json codec passes bytes through as if already encoded, so
    # bytes came back as a dict after a changelog recovery, and a dict cannot hold enums for
    # the strict models. A str round-trips exactly (test_decider_storage.py).
    raw = ports.loans.get(loan_id)
    return None if raw is None else StoredLoan.model_validate_json(raw)


async def _produce(
    ports: DeciderPorts, record: Record, loan_id: str, events: Any, outcome: Outcome
) -> None:
    key = loan_id.encode()
    pending = [
        await ports.events.send(key=key, value=encode_event(event), partition=record.partition)
        for event in events
    ]
    pending.append(
        await ports.outcomes.send(
            key=key, value=outcome.model_dump_json().encode(), partition=record.partition
        )
    )
    await asyncio.gather(*pending)


@dataclass(frozen=True)
class NotACommand:
    """Why a record is dead-lettered, and the ids to answer `invalid_command` to, if readable."""

    error: str
    answer_to: tuple[str, str] | None  # (command_id, loan_id)


def read_command(key: bytes | None, value: bytes | None, max_bytes: int) -> Command | NotACommand:
    """The command a record holds, or why it holds none."""
    value = value or b""
    if len(value) > max_bytes:
        return NotACommand(f"oversize: {len(value)} bytes > {max_bytes}", None)
    try:
        command = parse_command(value)
    except ValidationError as error:
        return NotACommand(_describe(error), _readable_ids(value))
    if key != command.loan_id.encode():
        return NotACommand("misrouted: the record key must be the loan_id", _readable_ids(value))
    return command


def invalid_outcome(answer_to: tuple[str, str]) -> Outcome:
    return rejected(answer_to[0], answer_to[1], RejectionReason.INVALID_COMMAND)


async def _parse_or_dead_letter(ports: DeciderPorts, record: Record) -> Command | None:
    """The command, or None after dead-lettering it (and, when its ids can be read, an
    `invalid_command` outcome so the caller waiting for it is answered)."""
    command = read_command(record.key, record.value, ports.max_message_bytes)
    if not isinstance(command, NotACommand):
        return command
    await _dead_letter(ports, record, command.error)
    if command.answer_to is not None:
        await _answer_invalid(ports, record, command.answer_to)
    return None


async def _dead_letter(ports: DeciderPorts, record: Record, error: str) -> None:
    ports.metrics.dead_letters.labels(source="commands", error=error.split(":")[0][:40]).inc()
    await send_dead_letter(
        ports.dlq, record.key, record.value, error, record.topic, record.partition, record.offset
    )


async def _answer_invalid(ports: DeciderPorts, record: Record, ids: tuple[str, str]) -> None:
    outcome = invalid_outcome(ids)
    ports.metrics.outcomes.labels(status="rejected", reason="invalid_command").inc()
    future = await ports.outcomes.send(
        key=ids[1].encode(), value=outcome.model_dump_json().encode(), partition=record.partition
    )
    await future


def _readable_ids(value: bytes) -> tuple[str, str] | None:
    """command_id and loan_id, if the bytes are a JSON object holding both as short strings."""
    try:
        document = json.loads(value)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    command_id, loan_id = document.get("command_id"), document.get("loan_id")
    if (
        isinstance(command_id, str)
        and isinstance(loan_id, str)
        and len(command_id) <= 64
        and len(loan_id) <= 64
    ):
        return command_id, loan_id
    return None


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    return f"invalid: {location}: {first['msg']} ({error.error_count()} errors)"


def _count(metrics: Metrics, command: Command, outcome: Outcome, events: Any) -> None:
    metrics.commands.labels(type=command.type).inc()
    metrics.outcomes.labels(
        status=outcome.status.value, reason=(outcome.reason or "").__str__()
    ).inc()
    for event in events:
        metrics.events.labels(type=event.type).inc()
