"""The deduction attempt of docs/design.md, one transition per test: given, when, then."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any, Literal

import pytest

from ledger import LoanState, Policy
from ledger.identity import attempt_id, refund_id
from ledger.state import AttemptStatus
from schemas.commands import Command, Source
from schemas.events import (
    Allocation,
    ChargesRecognisedEarly,
    Component,
    DeductionFailed,
    DeductionOutcomeUnknown,
    DeductionProcessing,
    DeductionResubmissionRequested,
    DeductionStarted,
    DeductionStuck,
    DeductionSubmitted,
    DeductionSucceeded,
    Posting,
    RefundStarted,
    ReportedAmountAboveAttempt,
)
from schemas.outcomes import OutcomeStatus, RejectionReason
from tests.support.builders import (
    ALPHA_CLEARING,
    FEE,
    FIRST_DUE,
    INCOME_FEE,
    INCOME_INTEREST,
    INTEREST,
    LOAN,
    OVERPAYMENT,
    PRINCIPAL,
    Body,
    after,
    beyond_the_refusal,
    close_day,
    expected,
    failure,
    fold,
    given,
    in_flight_id,
    order_not_found,
    outcome_unknown,
    posting,
    processing,
    request,
    small_loan,
    stuck,
    submitted,
    success,
    when,
)

ATTEMPT = attempt_id(LOAN, "r1", 0)
ROUTING = Policy(channels=("alpha", "beta"))


def due() -> LoanState:
    """Installment 1 (fee 500, interest 3_000, principal 100_000) fell due on Feb 1."""
    return given(small_loan(), close_day(FIRST_DUE))


def deducting(**request_fields: Any) -> LoanState:
    """Attempt ATTEMPT, from request r1 on `due()`, is in flight on channel alpha."""
    return after(due(), request("r1", **request_fields))


def started_body(amount: int, installments: tuple[int, ...], **overrides: Any) -> Body:
    fields: dict[str, Any] = {
        "attempt_id": ATTEMPT, "order_id": ATTEMPT, "channel": "alpha", "amount_minor": amount,
        "installments": installments, "source": Source.APP, "requested_by": "app-user",
        "debit_account_ref": "B1", "previous_attempt_id": None, "currency": "CNY",
        "business_date": FIRST_DUE,
    }  # fmt: skip
    if "attempt_id" in overrides:
        overrides.setdefault("order_id", overrides["attempt_id"])
    return DeductionStarted, fields | overrides


def paid(number: int, fee: int, interest: int, principal: int) -> tuple[Allocation, ...]:
    parts = ((Component.FEE, fee), (Component.INTEREST, interest), (Component.PRINCIPAL, principal))
    return tuple(
        Allocation(installment=number, component=component, amount_minor=amount)
        for component, amount in parts
        if amount
    )


def cleared(fee: int, interest: int, principal: int, excess: int = 0) -> tuple[Posting, ...]:
    parts = ((FEE, fee), (INTEREST, interest), (PRINCIPAL, principal), (OVERPAYMENT, excess))
    return tuple(posting(ALPHA_CLEARING, account, amount) for account, amount in parts if amount)


def succeeded_body(
    amount: int, allocations: tuple[Allocation, ...], postings: tuple[Posting, ...], excess: int = 0
) -> Body:
    return DeductionSucceeded, {
        "attempt_id": ATTEMPT, "order_id": ATTEMPT, "channel": "alpha",
        "channel_reference": "ch-ref-1", "amount_minor": amount, "allocations": allocations,
        "excess_minor": excess, "postings": postings,
    }  # fmt: skip


def rejection(state: LoanState, command: Command) -> tuple[RejectionReason | None, tuple[Any, ...]]:
    decision = when(state, command)
    assert decision.outcome.status is OutcomeStatus.REJECTED
    return decision.outcome.reason, beyond_the_refusal(decision)


def status(state: LoanState, attempt: str = ATTEMPT) -> AttemptStatus:
    found = state.attempt(attempt)
    assert found is not None
    return found.status


# ---- RequestRepayment -> DeductionStarted ----------------------------------------------------


def test_a_request_starts_a_deduction_for_everything_due_with_no_postings() -> None:
    state, command = due(), request("r1")
    decision = when(state, command)
    assert decision.events == expected(state, command, started_body(103_500, (1,)))
    assert decision.outcome.event_ids == (decision.events[0].event_id,)


def test_everything_due_includes_every_installment_that_fell_due_and_its_late_fee() -> None:
    state, command = given(small_loan(), close_day(date(2026, 3, 1))), request("r1")
    assert when(state, command).events == expected(
        state,
        command,
        started_body(103_500 + 5_150 + 102_500, (1, 2), business_date=date(2026, 3, 1)),
    )


def test_a_partial_amount_is_requested_as_given() -> None:
    state, command = due(), request("r1", amount_minor=50_000)
    assert when(state, command).events == expected(state, command, started_body(50_000, (1,)))


def test_named_installments_may_include_one_not_yet_due() -> None:
    state, command = due(), request("r1", installments=(3, 1))
    assert when(state, command).events == expected(
        state, command, started_body(103_500 + 101_500, (1, 3))
    )


def test_an_installment_named_twice_is_requested_once() -> None:
    state, command = due(), request("r1", installments=(2, 2))
    assert when(state, command).events == expected(state, command, started_body(102_500, (2,)))


def test_the_deduction_debits_the_account_the_loan_names() -> None:
    state = given(small_loan(debit_account_ref="card-token-9"), close_day(FIRST_DUE))
    command = request("r1", Source.COLLECTION)
    assert when(state, command).events == expected(
        state, command,
        started_body(103_500, (1,), source=Source.COLLECTION, requested_by="collection-user",
                     debit_account_ref="card-token-9"),
    )  # fmt: skip


DOORS = [
    (Source.APP, Source.AUTO_DEBIT, Source.COLLECTION),
    (Source.AUTO_DEBIT, Source.COLLECTION, Source.APP),
    (Source.COLLECTION, Source.APP, Source.AUTO_DEBIT),
]


@pytest.mark.parametrize("doors", DOORS, ids=lambda doors: doors[0].value + "-first")
def test_three_doors_asking_for_the_same_installment_start_one_deduction(
    doors: tuple[Source, Source, Source],
) -> None:
    state = due()
    decisions = []
    for door in doors:
        decision = when(state, request(f"{door.value}-1", door, installments=(1,)))
        state = fold(state, decision.events)
        decisions.append(decision)
    assert [(d.outcome.reason, [e.type for e in beyond_the_refusal(d)]) for d in decisions] == [
        (None, ["DeductionStarted"]),
        (RejectionReason.DEDUCTION_IN_PROGRESS, []),
        (RejectionReason.DEDUCTION_IN_PROGRESS, []),
    ]
    assert [a.source for a in state.attempts] == [doors[0]]


# ---- success -----------------------------------------------------------------------------


def test_success_posts_clearing_to_receivables_fees_then_interest_then_principal() -> None:
    state, command = deducting(), success("s1", ATTEMPT, 103_500)
    assert when(state, command).events == expected(
        state, command,
        succeeded_body(103_500, paid(1, 500, 3_000, 100_000), cleared(500, 3_000, 100_000)),
    )  # fmt: skip


def test_success_settles_the_attempt_and_the_installment() -> None:
    state = after(deducting(), success("s1", ATTEMPT, 103_500))
    assert (status(state), state.in_flight, state.installments[0].owed_minor) == (
        AttemptStatus.SUCCEEDED,
        None,
        0,
    )


def test_the_waterfall_pays_the_oldest_installment_first_late_fee_included() -> None:
    state = given(small_loan(), close_day(date(2026, 3, 1)), request("r1", amount_minor=110_000))
    command = success("s1", ATTEMPT, 110_000)
    # Installment 1: fee 500 + late fee 5_150, interest 3_000, principal 100_000 = 108_650;
    # the 1_350 left pays installment 2's fee 500, then 850 of its interest.
    allocations = paid(1, 5_650, 3_000, 100_000) + paid(2, 500, 850, 0)
    assert when(state, command).events == expected(
        state, command, succeeded_body(110_000, allocations, cleared(6_150, 3_850, 100_000))
    )


def test_paying_an_installment_not_yet_due_recognises_its_charges_first() -> None:
    state = deducting(installments=(2,))
    command = success("s1", ATTEMPT, 102_500)
    early: Body = (ChargesRecognisedEarly, {
        "installment": 2, "interest_recognised_minor": 2_000, "fee_recognised_minor": 500,
        "postings": (posting(INTEREST, INCOME_INTEREST, 2_000), posting(FEE, INCOME_FEE, 500)),
    })  # fmt: skip
    assert when(state, command).events == expected(
        state, command,
        early, succeeded_body(102_500, paid(2, 500, 2_000, 100_000), cleared(500, 2_000, 100_000)),
    )  # fmt: skip


def test_a_partial_early_payment_recognises_only_what_it_pays() -> None:
    state = deducting(installments=(2,), amount_minor=1_000)
    command = success("s1", ATTEMPT, 1_000)
    early: Body = (ChargesRecognisedEarly, {
        "installment": 2, "interest_recognised_minor": 500, "fee_recognised_minor": 500,
        "postings": (posting(INTEREST, INCOME_INTEREST, 500), posting(FEE, INCOME_FEE, 500)),
    })  # fmt: skip
    assert when(state, command).events == expected(
        state, command, early, succeeded_body(1_000, paid(2, 500, 500, 0), cleared(500, 500, 0))
    )


def test_excess_goes_to_overpayment_and_starts_a_refund() -> None:
    """A late success of an attempt that failed, once another attempt paid: all excess."""
    failed = after(deducting(), failure("f1", ATTEMPT, "card_expired", retriable=False))
    again = attempt_id(LOAN, "r2", 0)
    state = after(after(failed, request("r2")), success("s2", again, 103_500, reference="ch-2"))
    command = success("s1", ATTEMPT, 103_500)
    refund: Body = (RefundStarted, {
        "refund_id": refund_id(LOAN, "s1", 1), "channel": "alpha", "order_id": ATTEMPT,
        "amount_minor": 103_500, "debit_account_ref": "B1", "currency": "CNY",
    })  # fmt: skip
    assert when(state, command).events == expected(
        state, command,
        succeeded_body(103_500, (), cleared(0, 0, 0, 103_500), excess=103_500),
        refund,
    )  # fmt: skip


def test_a_success_above_the_attempts_amount_books_the_attempts_amount_and_flags_the_rest() -> None:
    """Issue 15, B: a report naming more than was asked for never reaches overpayment, so it
    never starts a refund of money that was not collected."""
    state, command = deducting(), success("s1", ATTEMPT, 1_000_000_000)
    above: Body = (ReportedAmountAboveAttempt, {
        "attempt_id": ATTEMPT, "order_id": ATTEMPT, "channel_reference": "ch-ref-1",
        "report_type": "ReportChannelSuccess", "reported_minor": 1_000_000_000,
        "booked_minor": 103_500,
    })  # fmt: skip
    assert when(state, command).events == expected(
        state, command,
        succeeded_body(103_500, paid(1, 500, 3_000, 100_000), cleared(500, 3_000, 100_000)),
        above,
    )  # fmt: skip


# ---- failure and routing -------------------------------------------------------------------


def failed_body(attempt: str, code: str, retriable: bool) -> Body:
    return DeductionFailed, {"attempt_id": attempt, "code": code, "retriable": retriable}


def test_a_definite_failure_ends_the_attempt_with_no_postings() -> None:
    state, command = deducting(), failure("f1", ATTEMPT, "card_expired", retriable=False)
    decision = when(state, command, ROUTING)
    assert decision.events == expected(state, command, failed_body(ATTEMPT, "card_expired", False))
    state = fold(state, decision.events)
    assert (status(state), state.in_flight) == (AttemptStatus.FAILED, None)


def test_a_retriable_failure_on_the_primary_moves_on_to_the_backup_channel() -> None:
    state, command = deducting(), failure("f1", ATTEMPT, "channel_busy", retriable=True)
    backup = attempt_id(LOAN, "f1", 1)
    assert when(state, command, ROUTING).events == expected(
        state, command,
        failed_body(ATTEMPT, "channel_busy", True),
        started_body(103_500, (1,), attempt_id=backup, channel="beta", previous_attempt_id=ATTEMPT),
    )  # fmt: skip


def test_insufficient_funds_is_not_retried() -> None:
    state, command = deducting(), failure("f1", ATTEMPT, "insufficient_funds", retriable=False)
    assert when(state, command, ROUTING).events == expected(
        state, command, failed_body(ATTEMPT, "insufficient_funds", False)
    )


def test_a_retriable_failure_on_the_last_channel_is_not_retried() -> None:
    state = after(deducting(), failure("f1", ATTEMPT, "channel_busy", True), policy=ROUTING)
    backup = in_flight_id(state)
    command = failure("f2", backup, "channel_busy", retriable=True)
    decision = when(state, command, ROUTING)
    assert decision.events == expected(state, command, failed_body(backup, "channel_busy", True))
    assert fold(state, decision.events).in_flight is None


def test_a_retriable_failure_with_a_single_channel_is_not_retried() -> None:
    policy = Policy(channels=("alpha",))
    state, command = deducting(), failure("f1", ATTEMPT, "channel_busy", retriable=True)
    assert when(state, command, policy).events == expected(
        state, command, failed_body(ATTEMPT, "channel_busy", True)
    )


# ---- unknown outcome, resubmission, processing -------------------------------------------


@pytest.mark.parametrize("detail", ["timeout", "error"])
def test_an_unknown_outcome_keeps_the_attempt_deducting(
    detail: Literal["timeout", "error"],
) -> None:
    state, command = deducting(), outcome_unknown("u1", ATTEMPT, detail)
    decision = when(state, command)
    assert decision.events == expected(
        state, command, (DeductionOutcomeUnknown, {"attempt_id": ATTEMPT, "detail": detail})
    )
    state = fold(state, decision.events)
    assert status(state) is AttemptStatus.DEDUCTING
    assert rejection(state, request("r2", Source.COLLECTION)) == (
        RejectionReason.DEDUCTION_IN_PROGRESS,
        (),
    )


def resubmission(submission: int) -> Body:
    return DeductionResubmissionRequested, {
        "attempt_id": ATTEMPT, "order_id": ATTEMPT, "submission": submission
    }  # fmt: skip


def test_no_such_order_resubmits_with_the_same_order_id() -> None:
    state, command = deducting(), order_not_found("q1", ATTEMPT)
    assert when(state, command).events == expected(state, command, resubmission(2))


def test_each_resubmission_counts_and_the_attempt_stays_deducting() -> None:
    state = after(deducting(), order_not_found("q1", ATTEMPT))
    command = order_not_found("q2", ATTEMPT)
    decision = when(state, command)
    assert decision.events == expected(state, command, resubmission(3))
    assert status(fold(state, decision.events)) is AttemptStatus.DEDUCTING


def test_processing_is_recorded_and_the_attempt_stays_in_flight() -> None:
    state, command = deducting(), processing("p1", ATTEMPT)
    decision = when(state, command)
    assert decision.events == expected(
        state, command, (DeductionProcessing, {"attempt_id": ATTEMPT})
    )
    assert fold(state, decision.events).in_flight == state.in_flight


def test_a_submission_acknowledgement_is_recorded_and_the_attempt_stays_in_flight() -> None:
    state, command = deducting(), submitted("a1", ATTEMPT)
    decision = when(state, command)
    assert decision.events == expected(
        state, command, (DeductionSubmitted, {"attempt_id": ATTEMPT})
    )
    assert fold(state, decision.events).in_flight == state.in_flight


def test_an_attempt_in_flight_too_long_is_flagged_stuck_and_stays_deducting() -> None:
    state, command = deducting(), stuck("stuck-1", ATTEMPT)
    decision = when(state, command)
    assert decision.events == expected(state, command, (DeductionStuck, {"attempt_id": ATTEMPT}))
    flagged = fold(state, decision.events).attempt(ATTEMPT)
    assert flagged is not None
    assert (flagged.status, flagged.stuck_flagged) == (AttemptStatus.DEDUCTING, True)


# ---- answers for settled or unknown attempts -----------------------------------------------

ANSWERS: dict[str, Callable[[str], Command]] = {
    "success": lambda attempt: success("late-1", attempt, 103_500, reference="ch-ref-9"),
    "failure": lambda attempt: failure("late-1", attempt, "card_expired", retriable=False),
    "retriable": lambda attempt: failure("late-1", attempt, "channel_busy", retriable=True),
    "processing": lambda attempt: processing("late-1", attempt),
    "not_found": lambda attempt: order_not_found("late-1", attempt),
    "unknown": lambda attempt: outcome_unknown("late-1", attempt),
    "submitted": lambda attempt: submitted("late-1", attempt),
    "stuck": lambda attempt: stuck("late-1", attempt),
}


@pytest.mark.parametrize("answer", ANSWERS.values(), ids=ANSWERS.keys())
def test_any_answer_for_a_succeeded_attempt_is_attempt_settled(
    answer: Callable[[str], Command],
) -> None:
    state = after(deducting(), success("s1", ATTEMPT, 103_500))
    assert rejection(state, answer(ATTEMPT)) == (RejectionReason.ATTEMPT_SETTLED, ())


@pytest.mark.parametrize(
    "answer", [a for k, a in ANSWERS.items() if k != "success"], ids=list(ANSWERS)[1:]
)
def test_any_answer_but_success_for_a_failed_attempt_is_attempt_settled(
    answer: Callable[[str], Command],
) -> None:
    state = after(deducting(), failure("f1", ATTEMPT, "card_expired", retriable=False))
    assert rejection(state, answer(ATTEMPT)) == (RejectionReason.ATTEMPT_SETTLED, ())


def test_a_late_success_after_a_definite_failure_is_posted() -> None:
    state = after(deducting(), failure("f1", ATTEMPT, "card_expired", retriable=False))
    command = success("s1", ATTEMPT, 103_500)
    decision = when(state, command)
    assert decision.events == expected(
        state, command,
        succeeded_body(103_500, paid(1, 500, 3_000, 100_000), cleared(500, 3_000, 100_000)),
    )  # fmt: skip
    assert status(fold(state, decision.events)) is AttemptStatus.SUCCEEDED


@pytest.mark.parametrize("answer", ANSWERS.values(), ids=ANSWERS.keys())
def test_an_answer_for_an_attempt_never_started_is_unknown_attempt(
    answer: Callable[[str], Command],
) -> None:
    assert rejection(deducting(), answer("no-such-attempt")) == (
        RejectionReason.UNKNOWN_ATTEMPT,
        (),
    )
