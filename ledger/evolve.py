"""`evolve(state, event) -> state`: apply one event. It only sets, appends and increments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from msgspec.structs import replace

from ledger.state import (
    IDEMPOTENCY_WINDOW,
    Allocated,
    Attempt,
    AttemptStatus,
    InstallmentState,
    LoanState,
    LoanTerms,
    ProcessedCommand,
    Refund,
    RefundStatus,
)
from schemas.events import (
    Allocation,
    AttemptEvent,
    BusinessDayClosed,
    ChargesRecognisedEarly,
    CommandRejected,
    Component,
    DeductionFailed,
    DeductionResubmissionRequested,
    DeductionReversed,
    DeductionStarted,
    DeductionStuck,
    DeductionSucceeded,
    DuplicateDebitRecorded,
    Event,
    EventBase,
    InstallmentFellDue,
    LateFeeAssessed,
    LoanOpened,
    RefundFailed,
    RefundStarted,
    RefundSucceeded,
)

PAID_FIELD = {
    Component.FEE: "paid_fee_minor",
    Component.INTEREST: "paid_interest_minor",
    Component.PRINCIPAL: "paid_principal_minor",
}


def evolve(state: LoanState, event: Event) -> LoanState:
    """The state after `event`. Events must arrive in `seq` order; anything else is a bug."""
    assert event.loan_id == state.loan_id, f"event for {event.loan_id} folded into {state.loan_id}"
    assert event.seq == state.next_seq, (
        f"{state.loan_id}: seq {event.seq}, expected {state.next_seq}"
    )
    return _apply(_record(state, event), event)


def _record(state: LoanState, event: EventBase) -> LoanState:
    """The envelope's part: seq, last event, and the idempotency record of its command."""
    seen = state.processed.get(event.causation_id)
    if isinstance(event, CommandRejected):  # its outcome names no event, now or on a repeat
        record = ProcessedCommand(payload_hash=event.causation_hash, refused=event.reason)
    elif seen is not None:
        record = replace(seen, event_ids=(*seen.event_ids, event.event_id))
    else:
        record = ProcessedCommand(
            payload_hash=event.causation_hash,
            event_ids=(event.event_id,),
            opening=isinstance(event, LoanOpened),
            attempt_id=event.attempt_id if isinstance(event, AttemptEvent) else None,
        )
    processed = _remember(state, event.causation_id, record, new=seen is None)
    return replace(state, next_seq=event.seq + 1, last_event_id=event.event_id, processed=processed)


def _remember(
    state: LoanState, command_id: str, record: ProcessedCommand, new: bool
) -> dict[str, ProcessedCommand]:
    """The idempotency record with `record`: the newest IDEMPOTENCY_WINDOW commands, and beyond
    them only those a repeat could still act on (the opening, an attempt in flight). Anything
    older is answered from the loan's state instead (`ledger.decide`): the copy made here per
    event is therefore bounded, whatever the loan's age."""
    processed = {**state.processed, command_id: record}
    if not new or len(processed) <= IDEMPOTENCY_WINDOW:
        return processed
    for old_id, old in processed.items():
        if old_id != command_id and not _pinned(state, old):
            del processed[old_id]
            break
    return processed


def _pinned(state: LoanState, record: ProcessedCommand) -> bool:
    if record.opening:
        return True
    if record.attempt_id is None:
        return False
    attempt = state.attempt(record.attempt_id)
    return attempt is not None and attempt.status is AttemptStatus.DEDUCTING


def _apply(state: LoanState, event: Event) -> LoanState:
    match event:
        case LoanOpened():
            return _opened(state, event)
        case BusinessDayClosed():
            return replace(state, business_date=event.business_date)
        case InstallmentFellDue() | ChargesRecognisedEarly():
            return _recognised(state, event)
        case LateFeeAssessed():
            return _update_installment(state, event.installment, late_fee_minor=event.amount_minor)
        case DeductionStarted():
            return _started(state, event)
        case DeductionResubmissionRequested():
            return _update_attempt(state, event, submissions=event.submission)
        case DeductionStuck():
            return _update_attempt(state, event, stuck_flagged=True)
        case DeductionSucceeded():
            return _succeeded(state, event)
        case DeductionFailed():
            return _update_attempt(state, event, status=AttemptStatus.FAILED)
        case DeductionReversed():
            return _reversed(state, event)
        case DuplicateDebitRecorded():
            return _duplicate_debit(state, event)
        case RefundStarted():
            return _refund_started(state, event)
        case RefundSucceeded():
            return _update_refund(state, event.refund_id, RefundStatus.SUCCEEDED)
        case RefundFailed():
            return _update_refund(state, event.refund_id, RefundStatus.FAILED)
        case _:
            # Submitted, processing, outcome unknown, auto-debit due, a command rejected: facts
            # for the log and the gateway; the loan's state does not change (but for the
            # idempotency record every event leaves, above).
            return state


def _opened(state: LoanState, event: LoanOpened) -> LoanState:
    terms = LoanTerms(
        borrower_id=event.borrower_id,
        currency=event.currency,
        principal_minor=event.principal_minor,
        debit_account_ref=event.debit_account_ref,
    )
    rows = tuple(
        InstallmentState(
            number=row.number,
            due_date=row.due_date,
            principal_minor=row.principal_minor,
            interest_minor=row.interest_minor,
            fee_minor=row.fee_minor,
        )
        for row in event.schedule
    )
    return replace(state, terms=terms, installments=rows)


def _recognised(state: LoanState, event: InstallmentFellDue | ChargesRecognisedEarly) -> LoanState:
    row = state.installments[event.installment - 1]
    return _update_installment(
        state,
        event.installment,
        fell_due=row.fell_due or isinstance(event, InstallmentFellDue),
        interest_recognised_minor=row.interest_recognised_minor + event.interest_recognised_minor,
        fee_recognised_minor=row.fee_recognised_minor + event.fee_recognised_minor,
    )


def _started(state: LoanState, event: DeductionStarted) -> LoanState:
    attempt = Attempt(
        attempt_id=event.attempt_id,
        # One string where both ids are equal (every attempt today): one less copy per attempt.
        order_id=event.attempt_id if event.order_id == event.attempt_id else event.order_id,
        channel=event.channel,
        amount_minor=event.amount_minor,
        installments=event.installments,
        source=event.source,
        requested_by=event.requested_by,
        started_at=event.occurred_at,
        business_date=event.business_date,
    )
    return replace(state, attempts=(*state.attempts, attempt))


def _succeeded(state: LoanState, event: DeductionSucceeded) -> LoanState:
    paid = _allocate(state, event.allocations, sign=+1)
    return _update_attempt(
        paid,
        event,
        status=AttemptStatus.SUCCEEDED,
        success_event_id=event.event_id,
        channel_reference=event.channel_reference,
        collected_minor=event.amount_minor,
        allocations=tuple(
            Allocated(installment=a.installment, component=a.component, amount_minor=a.amount_minor)
            for a in event.allocations
        ),
        excess_minor=event.excess_minor,
    )


def _reversed(state: LoanState, event: DeductionReversed) -> LoanState:
    unpaid = _allocate(state, event.allocations, sign=-1)
    return _update_attempt(unpaid, event, status=AttemptStatus.REVERSED)


def _duplicate_debit(state: LoanState, event: DuplicateDebitRecorded) -> LoanState:
    attempt = _find_attempt(state, event)
    return _update_attempt(
        state, event, duplicate_debits=(*attempt.duplicate_debits, event.channel_reference)
    )


def _refund_started(state: LoanState, event: RefundStarted) -> LoanState:
    refund = Refund(
        refund_id=event.refund_id,
        channel=event.channel,
        order_id=event.order_id,
        amount_minor=event.amount_minor,
    )
    return replace(state, refunds=(*state.refunds, refund))


def _allocate(state: LoanState, allocations: tuple[Allocation, ...], sign: int) -> LoanState:
    for allocation in allocations:
        row = state.installments[allocation.installment - 1]
        field = PAID_FIELD[allocation.component]
        paid = getattr(row, field) + sign * allocation.amount_minor
        state = _update_installment(state, allocation.installment, **{field: paid})
    return state


def _update_installment(state: LoanState, number: int, **changes: Any) -> LoanState:
    rows = state.installments
    updated = replace(rows[number - 1], **changes)
    return replace(state, installments=(*rows[: number - 1], updated, *rows[number:]))


def _find_attempt(state: LoanState, event: AttemptEvent) -> Attempt:
    attempt = state.attempt(event.attempt_id)
    assert attempt is not None, f"{state.loan_id}: event for unknown attempt {event.attempt_id}"
    return attempt


def _update_attempt(state: LoanState, event: AttemptEvent, **changes: Any) -> LoanState:
    _find_attempt(state, event)
    attempts = _replace(state.attempts, lambda a: a.attempt_id == event.attempt_id, changes)
    return replace(state, attempts=attempts)


def _update_refund(state: LoanState, refund_id: str, status: RefundStatus) -> LoanState:
    assert state.refund(refund_id) is not None, f"{state.loan_id}: unknown refund {refund_id}"
    changes = {"status": status}
    return replace(
        state, refunds=_replace(state.refunds, lambda r: r.refund_id == refund_id, changes)
    )


Item = TypeVar("Item", Attempt, Refund)


def _replace(
    items: tuple[Item, ...], matches: Callable[[Item], bool], changes: dict[str, Any]
) -> tuple[Item, ...]:
    return tuple(replace(item, **changes) if matches(item) else item for item in items)
