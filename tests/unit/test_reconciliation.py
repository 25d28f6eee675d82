"""Statement findings and refund answers: every discrepancy becomes a compensating event."""

from __future__ import annotations

from typing import Any

import pytest

from ledger import LoanState
from ledger.balances import fold_balances
from ledger.identity import attempt_id, refund_id
from ledger.state import AttemptStatus, RefundStatus
from schemas.commands import Command
from schemas.events import (
    Allocation,
    Component,
    DeductionReversed,
    DeductionSucceeded,
    DuplicateDebitRecorded,
    Event,
    Posting,
    RefundFailed,
    RefundStarted,
    RefundSucceeded,
)
from schemas.outcomes import OutcomeStatus, RejectionReason
from tests.support.builders import (
    ALPHA_CLEARING,
    FEE,
    FIRST_DUE,
    INTEREST,
    LOAN,
    OVERPAYMENT,
    PRINCIPAL,
    Body,
    after,
    beyond_the_refusal,
    close_day,
    duplicate_debit,
    expected,
    failure,
    fold,
    given,
    history,
    refund_failure,
    refund_success,
    request,
    reversal,
    small_loan,
    success,
    unrecorded_success,
    when,
)

ATTEMPT = attempt_id(LOAN, "r1", 0)
DUE = (small_loan(), close_day(FIRST_DUE))
PAID_IN_FULL = (
    Allocation(installment=1, component=Component.FEE, amount_minor=500),
    Allocation(installment=1, component=Component.INTEREST, amount_minor=3_000),
    Allocation(installment=1, component=Component.PRINCIPAL, amount_minor=100_000),
)


def collected(amount: int = 103_500) -> tuple[LoanState, tuple[Event, ...]]:
    """Installment 1 (103_500) fell due, was requested as r1 and `amount` was collected (s1)."""
    return history(*DUE, request("r1"), success("s1", ATTEMPT, amount))


def collected_with_excess() -> tuple[LoanState, tuple[Event, ...]]:
    """r1's attempt failed, r2 paid 500 of the installment, then r1's late success collected
    all 103_500: 500 more than was still owed (a success never books more than its attempt
    asked for, so this is how excess arises)."""
    return history(
        *DUE, request("r1"), failure("f1", ATTEMPT, "card_expired", retriable=False),
        request("r2", amount_minor=500), success("s2", attempt_id(LOAN, "r2", 0), 500, "ch-2"),
        success("s1", ATTEMPT, 103_500),
    )  # fmt: skip


def success_event(events: tuple[Event, ...]) -> DeductionSucceeded:
    (found,) = [
        event
        for event in events
        if isinstance(event, DeductionSucceeded) and event.attempt_id == ATTEMPT
    ]
    return found


def rejection(state: LoanState, command: Command) -> tuple[RejectionReason | None, tuple[Any, ...]]:
    decision = when(state, command)
    assert decision.outcome.status is OutcomeStatus.REJECTED
    return decision.outcome.reason, beyond_the_refusal(decision)


def balances_after(events: tuple[Event, ...], *more: tuple[Event, ...]) -> dict[str, int]:
    everything = events + tuple(event for batch in more for event in batch)
    return fold_balances(p for e in everything for p in e.postings)


# ---- reversal ------------------------------------------------------------------------------


def reversed_body(success: DeductionSucceeded, postings: tuple[Posting, ...]) -> Body:
    return DeductionReversed, {
        "attempt_id": ATTEMPT, "reverses_event_id": success.event_id,
        "allocations": success.allocations, "excess_minor": success.excess_minor,
        "postings": postings,
    }  # fmt: skip


def test_a_reversal_mirrors_the_success_postings_exactly() -> None:
    state, events = collected()
    command = reversal("rev-1", ATTEMPT)
    mirrored = (
        Posting(debit=FEE, credit=ALPHA_CLEARING, amount_minor=500, currency="CNY"),
        Posting(debit=INTEREST, credit=ALPHA_CLEARING, amount_minor=3_000, currency="CNY"),
        Posting(debit=PRINCIPAL, credit=ALPHA_CLEARING, amount_minor=100_000, currency="CNY"),
    )
    assert when(state, command).events == expected(
        state, command, reversed_body(success_event(events), mirrored)
    )


def test_a_reversal_of_a_success_with_excess_mirrors_the_overpayment_too() -> None:
    state, events = collected_with_excess()
    decision = when(state, reversal("rev-1", ATTEMPT))
    assert [(p.debit, p.credit, p.amount_minor) for p in decision.events[0].postings] == [
        (p.credit, p.debit, p.amount_minor) for p in success_event(events).postings
    ]
    assert balances_after(events)[OVERPAYMENT] == -500
    assert balances_after(events, decision.events)[OVERPAYMENT] == 0


def test_a_reversal_reopens_the_installment_and_a_new_request_is_accepted() -> None:
    state, events = collected()
    decision = when(state, reversal("rev-1", ATTEMPT))
    state = fold(state, decision.events)
    assert (state.installments[0].owed_minor, state.attempts[0].status) == (
        103_500,
        AttemptStatus.REVERSED,
    )
    assert balances_after(events, decision.events)[ALPHA_CLEARING] == 0
    again = when(state, request("r2"))
    assert again.outcome.status is OutcomeStatus.ACCEPTED
    assert [(e.type, getattr(e, "amount_minor", None)) for e in again.events] == [
        ("DeductionStarted", 103_500)
    ]


@pytest.mark.parametrize("outcome", ["in_flight", "failed", "reversed"])
def test_a_reversal_of_an_attempt_that_did_not_succeed_is_refused(outcome: str) -> None:
    base = given(*DUE, request("r1"))
    if outcome == "failed":
        base = after(base, failure("f1", ATTEMPT, "card_expired", retriable=False))
    if outcome == "reversed":
        base = after(base, success("s1", ATTEMPT, 103_500), reversal("rev-1", ATTEMPT))
    assert rejection(base, reversal("rev-2", ATTEMPT)) == (
        RejectionReason.ATTEMPT_NOT_SUCCEEDED,
        (),
    )


# ---- duplicate debit and refunds -----------------------------------------------------------

DUPLICATE_REFUND = refund_id(LOAN, "dup-1", 1)


def test_a_duplicate_debit_moves_the_money_to_overpayment_and_starts_a_refund() -> None:
    state, _ = collected()
    command = duplicate_debit("dup-1", ATTEMPT, 103_500)
    recorded: Body = (DuplicateDebitRecorded, {
        "attempt_id": ATTEMPT, "channel_reference": "ch-ref-2", "amount_minor": 103_500,
        "postings": (Posting(debit=ALPHA_CLEARING, credit=OVERPAYMENT, amount_minor=103_500,
                             currency="CNY"),),
    })  # fmt: skip
    refund: Body = (RefundStarted, {
        "refund_id": DUPLICATE_REFUND, "channel": "alpha", "order_id": ATTEMPT,
        "amount_minor": 103_500, "debit_account_ref": "B1", "currency": "CNY",
    })  # fmt: skip
    assert when(state, command).events == expected(state, command, recorded, refund)


def test_a_refunded_duplicate_debit_returns_overpayment_to_zero() -> None:
    state, events = history(
        *DUE,
        request("r1"),
        success("s1", ATTEMPT, 103_500),
        duplicate_debit("dup-1", ATTEMPT, 103_500),
    )
    command = refund_success("rf-1", DUPLICATE_REFUND)
    decision = when(state, command)
    assert decision.events == expected(state, command, (RefundSucceeded, {
        "refund_id": DUPLICATE_REFUND, "channel_reference": "refund-ref-1",
        "postings": (Posting(debit=OVERPAYMENT, credit=ALPHA_CLEARING, amount_minor=103_500,
                             currency="CNY"),),
    }))  # fmt: skip
    assert balances_after(events)[OVERPAYMENT] == -103_500
    assert balances_after(events, decision.events)[OVERPAYMENT] == 0
    assert fold(state, decision.events).refunds[0].status is RefundStatus.SUCCEEDED


def test_a_failed_refund_leaves_the_money_in_overpayment() -> None:
    state, events = history(
        *DUE,
        request("r1"),
        success("s1", ATTEMPT, 103_500),
        duplicate_debit("dup-1", ATTEMPT, 103_500),
    )
    command = refund_failure("rf-1", DUPLICATE_REFUND)
    decision = when(state, command)
    assert decision.events == expected(
        state, command, (RefundFailed, {"refund_id": DUPLICATE_REFUND, "code": "card_closed"})
    )
    assert balances_after(events, decision.events)[OVERPAYMENT] == -103_500
    assert fold(state, decision.events).refunds[0].status is RefundStatus.FAILED


def test_a_duplicate_debit_on_a_reversed_attempt_is_still_recorded() -> None:
    state, _ = collected()
    state = after(state, reversal("rev-1", ATTEMPT))
    decision = when(state, duplicate_debit("dup-1", ATTEMPT, 103_500))
    assert [e.type for e in decision.events] == ["DuplicateDebitRecorded", "RefundStarted"]


@pytest.mark.parametrize("failed", [False, True], ids=["in_flight", "failed"])
def test_a_duplicate_debit_on_an_attempt_that_did_not_succeed_is_refused(failed: bool) -> None:
    state = given(*DUE, request("r1"))
    if failed:
        state = after(state, failure("f1", ATTEMPT, "card_expired", retriable=False))
    assert rejection(state, duplicate_debit("dup-1", ATTEMPT, 103_500)) == (
        RejectionReason.ATTEMPT_NOT_SUCCEEDED,
        (),
    )


@pytest.mark.parametrize("first", [refund_success, refund_failure])
@pytest.mark.parametrize("second", [refund_success, refund_failure])
def test_an_answer_for_an_ended_refund_is_refund_settled(first: Any, second: Any) -> None:
    state, _ = history(
        *DUE,
        request("r1"),
        success("s1", ATTEMPT, 103_500),
        duplicate_debit("dup-1", ATTEMPT, 103_500),
    )
    state = after(state, first("rf-1", DUPLICATE_REFUND))
    assert rejection(state, second("rf-2", DUPLICATE_REFUND)) == (
        RejectionReason.REFUND_SETTLED,
        (),
    )


@pytest.mark.parametrize("answer", [refund_success, refund_failure])
def test_an_answer_for_a_refund_never_started_is_unknown_refund(answer: Any) -> None:
    state, _ = collected()
    assert rejection(state, answer("rf-1", "no-such-refund")) == (
        RejectionReason.UNKNOWN_REFUND,
        (),
    )


def test_the_excess_refund_of_a_success_is_answered_like_any_refund() -> None:
    state, events = collected_with_excess()
    command = refund_success("rf-1", state.refunds[0].refund_id)
    decision = when(state, command)
    assert balances_after(events)[OVERPAYMENT] == -500
    assert balances_after(events, decision.events)[OVERPAYMENT] == 0


# ---- unrecorded success --------------------------------------------------------------------


def found_body() -> Body:
    return DeductionSucceeded, {
        "attempt_id": ATTEMPT, "order_id": ATTEMPT, "channel": "alpha",
        "channel_reference": "ch-ref-1", "amount_minor": 103_500, "allocations": PAID_IN_FULL,
        "excess_minor": 0, "found_by_reconciliation": True,
        "postings": (
            Posting(debit=ALPHA_CLEARING, credit=FEE, amount_minor=500, currency="CNY"),
            Posting(debit=ALPHA_CLEARING, credit=INTEREST, amount_minor=3_000, currency="CNY"),
            Posting(debit=ALPHA_CLEARING, credit=PRINCIPAL, amount_minor=100_000, currency="CNY"),
        ),
    }  # fmt: skip


@pytest.mark.parametrize("failed", [False, True], ids=["in_flight", "failed"])
def test_an_unrecorded_success_is_posted_as_found_by_reconciliation(failed: bool) -> None:
    state = given(*DUE, request("r1"))
    if failed:
        state = after(state, failure("f1", ATTEMPT, "card_expired", retriable=False))
    command = unrecorded_success("recon-1", ATTEMPT, 103_500)
    decision = when(state, command)
    assert decision.events == expected(state, command, found_body())
    assert fold(state, decision.events).attempts[0].status is AttemptStatus.SUCCEEDED


@pytest.mark.parametrize("reversed_", [False, True], ids=["succeeded", "reversed"])
def test_an_unrecorded_success_for_a_collected_attempt_is_attempt_settled(reversed_: bool) -> None:
    state, _ = collected()
    if reversed_:
        state = after(state, reversal("rev-1", ATTEMPT))
    assert rejection(state, unrecorded_success("recon-1", ATTEMPT, 103_500)) == (
        RejectionReason.ATTEMPT_SETTLED,
        (),
    )


@pytest.mark.parametrize(
    "finding",
    [
        reversal("x-1", "no-such-order"),
        duplicate_debit("x-1", "no-such-order", 100),
        unrecorded_success("x-1", "no-such-order", 100),
    ],
    ids=["reversal", "duplicate_debit", "unrecorded_success"],
)
def test_a_statement_line_for_an_order_never_started_is_unknown_attempt(finding: Command) -> None:
    state, _ = collected()
    assert rejection(state, finding) == (RejectionReason.UNKNOWN_ATTEMPT, ())
