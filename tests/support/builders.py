"""Test vocabulary: build commands with sensible defaults and fold them into a loan's state.

Reads as given(commands...) -> state, when(state, command) -> decision, then exact equality.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from ledger import DEFAULT_POLICY, Decision, LoanState, Policy, decide, evolve, initial_state
from ledger.identity import event_id, payload_hash
from schemas.commands import (
    CloseBusinessDay,
    Command,
    DiscrepancyKind,
    FlagStuckAttempt,
    OpenLoan,
    RepaymentMethod,
    ReportChannelFailure,
    ReportChannelProcessing,
    ReportChannelSuccess,
    ReportDuplicateDebit,
    ReportOrderNotFound,
    ReportOutcomeUnknown,
    ReportRefundFailure,
    ReportRefundSuccess,
    ReportReversal,
    ReportStatementDiscrepancy,
    ReportSubmission,
    ReportUnrecordedSuccess,
    RequestRepayment,
    Source,
)
from schemas.events import CommandRejected, DeductionStarted, Event, EventBase, Posting
from schemas.outcomes import OutcomeStatus

LOAN = "L1"
T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
FIRST_DUE = date(2026, 2, 1)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def open_loan(command_id: str = "open-1", loan_id: str = LOAN, **overrides: Any) -> OpenLoan:
    """100,000.00 CNY, 12 % a year, 12 months, equal installments, due on the 1st from Feb 2026."""
    fields: dict[str, Any] = {
        "command_id": command_id,
        "loan_id": loan_id,
        "issued_at": T0,
        "borrower_id": "B1",
        "principal_minor": 10_000_000,
        "currency": "CNY",
        "annual_rate_bps": 1200,
        "term_months": 12,
        "repayment_method": RepaymentMethod.EQUAL_INSTALLMENT,
        "first_due_date": FIRST_DUE,
    }
    return OpenLoan(**(fields | overrides))


def request(
    command_id: str, source: Source = Source.APP, loan_id: str = LOAN, **overrides: Any
) -> RequestRepayment:
    fields: dict[str, Any] = {
        "command_id": command_id,
        "loan_id": loan_id,
        "issued_at": at(1),
        "source": source,
        "requested_by": f"{source.value}-user",
    }
    return RequestRepayment(**(fields | overrides))


def close_day(
    business_date: date, command_id: str | None = None, loan_id: str = LOAN
) -> CloseBusinessDay:
    return CloseBusinessDay(
        command_id=command_id or f"close-{business_date.isoformat()}",
        loan_id=loan_id,
        issued_at=datetime.combine(business_date, datetime.min.time(), tzinfo=UTC)
        + timedelta(hours=23),
        business_date=business_date,
    )


def success(
    command_id: str,
    attempt_id: str,
    amount_minor: int,
    reference: str = "ch-ref-1",
    loan_id: str = LOAN,
) -> ReportChannelSuccess:
    return ReportChannelSuccess(
        command_id=command_id, loan_id=loan_id, issued_at=at(2), attempt_id=attempt_id,
        channel_reference=reference, amount_minor=amount_minor,
    )  # fmt: skip


def failure(
    command_id: str, attempt_id: str, code: str, retriable: bool, loan_id: str = LOAN
) -> ReportChannelFailure:
    return ReportChannelFailure(
        command_id=command_id, loan_id=loan_id, issued_at=at(2), attempt_id=attempt_id,
        code=code, retriable=retriable,
    )  # fmt: skip


def when(state: LoanState, command: Command, policy: Policy = DEFAULT_POLICY) -> Decision:
    return decide(state, command, policy)


def fold(state: LoanState, events: tuple[Event, ...] | list[Event]) -> LoanState:
    for event in events:
        state = evolve(state, event)
    return state


def given(*commands: Command, policy: Policy = DEFAULT_POLICY, loan_id: str = LOAN) -> LoanState:
    """The state after deciding and folding `commands`, each of which must be accepted."""
    state = initial_state(loan_id)
    for command in commands:
        decision = decide(state, command, policy)
        assert decision.outcome.status is OutcomeStatus.ACCEPTED, (command, decision.outcome)
        state = fold(state, decision.events)
    return state


def started(decision: Decision) -> DeductionStarted:
    """The DeductionStarted event of a decision (there is exactly one)."""
    found = [event for event in decision.events if isinstance(event, DeductionStarted)]
    assert len(found) == 1, decision.events
    return found[0]


# ---- the other commands, expected events and histories ------------------------------------


def small_loan(command_id: str = "open-1", **overrides: Any) -> OpenLoan:
    """3,000.00 CNY, 12 % a year, 3 months, equal principal, 5.00 fee: rows checkable by hand.

    1: due 2026-02-01, principal 100_000, interest 3_000, fee 500 = 103_500
    2: due 2026-03-01, principal 100_000, interest 2_000, fee 500 = 102_500
    3: due 2026-04-01, principal 100_000, interest 1_000, fee 500 = 101_500
    """
    fields: dict[str, Any] = {
        "principal_minor": 300_000,
        "term_months": 3,
        "repayment_method": RepaymentMethod.EQUAL_PRINCIPAL,
        "fee_per_installment_minor": 500,
    }
    return open_loan(command_id, **(fields | overrides))


def submitted(command_id: str, attempt_id: str, loan_id: str = LOAN) -> ReportSubmission:
    return ReportSubmission(
        command_id=command_id, loan_id=loan_id, issued_at=at(2), attempt_id=attempt_id
    )


def processing(command_id: str, attempt_id: str, loan_id: str = LOAN) -> ReportChannelProcessing:
    return ReportChannelProcessing(
        command_id=command_id, loan_id=loan_id, issued_at=at(2), attempt_id=attempt_id
    )


def outcome_unknown(
    command_id: str,
    attempt_id: str,
    detail: Literal["timeout", "error"] = "timeout",
    loan_id: str = LOAN,
) -> ReportOutcomeUnknown:
    return ReportOutcomeUnknown(
        command_id=command_id, loan_id=loan_id, issued_at=at(2), attempt_id=attempt_id,
        detail=detail,
    )  # fmt: skip


def order_not_found(command_id: str, attempt_id: str, loan_id: str = LOAN) -> ReportOrderNotFound:
    return ReportOrderNotFound(
        command_id=command_id, loan_id=loan_id, issued_at=at(2), attempt_id=attempt_id
    )


def stuck(command_id: str, attempt_id: str, loan_id: str = LOAN) -> FlagStuckAttempt:
    return FlagStuckAttempt(
        command_id=command_id, loan_id=loan_id, issued_at=at(60), attempt_id=attempt_id
    )


STATEMENT_DATE = date(2026, 2, 2)


def reversal(
    command_id: str, order_id: str, channel: str = "alpha", loan_id: str = LOAN
) -> ReportReversal:
    return ReportReversal(
        command_id=command_id, loan_id=loan_id, issued_at=at(1440), order_id=order_id,
        channel=channel, statement_date=STATEMENT_DATE,
    )  # fmt: skip


def duplicate_debit(
    command_id: str,
    order_id: str,
    amount_minor: int,
    reference: str = "ch-ref-2",
    channel: str = "alpha",
    loan_id: str = LOAN,
) -> ReportDuplicateDebit:
    return ReportDuplicateDebit(
        command_id=command_id, loan_id=loan_id, issued_at=at(1440), order_id=order_id,
        channel=channel, statement_date=STATEMENT_DATE, channel_reference=reference,
        amount_minor=amount_minor,
    )  # fmt: skip


def unrecorded_success(
    command_id: str,
    order_id: str,
    amount_minor: int,
    reference: str = "ch-ref-1",
    channel: str = "alpha",
    loan_id: str = LOAN,
) -> ReportUnrecordedSuccess:
    return ReportUnrecordedSuccess(
        command_id=command_id, loan_id=loan_id, issued_at=at(1440), order_id=order_id,
        channel=channel, statement_date=STATEMENT_DATE, channel_reference=reference,
        amount_minor=amount_minor,
    )  # fmt: skip


def discrepancy(
    command_id: str,
    order_id: str,
    kind: DiscrepancyKind = DiscrepancyKind.MISSING_FROM_STATEMENT,
    channel: str = "alpha",
    loan_id: str = LOAN,
) -> ReportStatementDiscrepancy:
    return ReportStatementDiscrepancy(
        command_id=command_id, loan_id=loan_id, issued_at=at(1440), order_id=order_id,
        channel=channel, statement_date=STATEMENT_DATE, kind=kind, detail="on no statement",
    )  # fmt: skip


def refund_success(
    command_id: str, refund_id: str, reference: str = "refund-ref-1", loan_id: str = LOAN
) -> ReportRefundSuccess:
    return ReportRefundSuccess(
        command_id=command_id, loan_id=loan_id, issued_at=at(1500), refund_id=refund_id,
        channel_reference=reference,
    )  # fmt: skip


def refund_failure(
    command_id: str, refund_id: str, code: str = "card_closed", loan_id: str = LOAN
) -> ReportRefundFailure:
    return ReportRefundFailure(
        command_id=command_id, loan_id=loan_id, issued_at=at(1500), refund_id=refund_id,
        code=code,
    )  # fmt: skip


def posting(debit: str, credit: str, amount_minor: int, currency: str = "CNY") -> Posting:
    return Posting(debit=debit, credit=credit, amount_minor=amount_minor, currency=currency)


def envelope(
    state: LoanState, command: Command, index: int, postings: Iterable[Posting] = ()
) -> dict[str, Any]:
    """The envelope the decider must stamp on the index-th event of `command` decided on `state`."""
    return {
        "event_id": event_id(command.loan_id, command.command_id, state.next_seq + index),
        "loan_id": command.loan_id,
        "seq": state.next_seq + index,
        "causation_id": command.command_id,
        "causation_hash": payload_hash(command),
        "occurred_at": command.issued_at,
        "postings": tuple(postings),
    }


Body = tuple[type[EventBase], dict[str, Any]]
"""An expected event without its envelope: the event class and its own fields."""


def expected(state: LoanState, command: Command, *bodies: Body) -> tuple[EventBase, ...]:
    """The events `command` must produce on `state`: each (event class, fields) gets its envelope.
    A body may carry its own `postings`."""
    return tuple(
        kind(**(envelope(state, command, index) | fields))
        for index, (kind, fields) in enumerate(bodies)
    )


def history(
    *commands: Command, policy: Policy = DEFAULT_POLICY, loan_id: str = LOAN
) -> tuple[LoanState, tuple[Event, ...]]:
    """Like `given`, but also returns every event, e.g. to fold balances over the whole log."""
    state = initial_state(loan_id)
    events: list[Event] = []
    for command in commands:
        decision = decide(state, command, policy)
        assert decision.outcome.status is OutcomeStatus.ACCEPTED, (command, decision.outcome)
        state = fold(state, decision.events)
        events.extend(decision.events)
    return state, tuple(events)


def in_flight_id(state: LoanState) -> str:
    """The id (and channel order id) of the attempt now DEDUCTING."""
    attempt = state.in_flight
    assert attempt is not None, "no attempt in flight"
    return attempt.attempt_id


def last_refund_id(state: LoanState) -> str:
    assert state.refunds, "no refund started"
    return state.refunds[-1].refund_id


# The chart of accounts of docs/design.md, spelled out for loan L1.
PRINCIPAL = "loan:L1:principal"
INTEREST = "loan:L1:interest"
FEE = "loan:L1:fee"
OVERPAYMENT = "loan:L1:overpayment"
ALPHA_CLEARING = "channel:alpha:clearing"
BETA_CLEARING = "channel:beta:clearing"
BANK = "bank:funding"
INCOME_INTEREST = "income:interest"
INCOME_FEE = "income:fee"


def after(state: LoanState, *commands: Command, policy: Policy = DEFAULT_POLICY) -> LoanState:
    """Like `given`, but going on from `state`: each command must be accepted."""
    for command in commands:
        decision = decide(state, command, policy)
        assert decision.outcome.status is OutcomeStatus.ACCEPTED, (command, decision.outcome)
        state = fold(state, decision.events)
    return state


def beyond_the_refusal(decision: Decision) -> tuple[Event, ...]:
    """A decision's events but the record a refusal leaves (one `CommandRejected` naming the
    outcome's reason, so that a repeat is refused alike): for a refusal, what it changed, which
    must be nothing."""
    events = decision.events
    if decision.outcome.status is OutcomeStatus.REJECTED and events:
        record, *rest = events
        assert isinstance(record, CommandRejected), record
        assert (record.reason, record.postings) == (decision.outcome.reason, ())
        return tuple(rest)
    return events
