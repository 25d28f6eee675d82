"""OpenLoan and CloseBusinessDay: the schedule, the disbursement, dues, late fees, auto-debits."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from ledger import DEFAULT_POLICY, LoanState, Policy, initial_state
from ledger.balances import fold_balances
from ledger.identity import auto_debit_command_id
from schemas.base import MAX_AMOUNT_MINOR
from schemas.commands import OpenLoan, RepaymentMethod, Source
from schemas.events import (
    AutoDebitDue,
    BusinessDayClosed,
    Event,
    Installment,
    InstallmentFellDue,
    LateFeeAssessed,
    LoanOpened,
)
from schemas.outcomes import OutcomeStatus, RejectionReason
from tests.support.builders import (
    BANK,
    FEE,
    FIRST_DUE,
    INCOME_FEE,
    INCOME_INTEREST,
    INTEREST,
    LOAN,
    PRINCIPAL,
    Body,
    after,
    at,
    beyond_the_refusal,
    close_day,
    expected,
    failure,
    fold,
    given,
    history,
    in_flight_id,
    open_loan,
    posting,
    request,
    small_loan,
    success,
    when,
)

FEB_1 = FIRST_DUE
MAR_1 = date(2026, 3, 1)
MAR_10 = date(2026, 3, 10)
# The loan is never closed before MAR_10: 37 days past its first due date, beyond the default
# `max_days_ahead` (31), so the skipped-days cases run under a policy that allows the jump.
SKIPPING = Policy(max_days_ahead=60)


def row(number: int, due: date, interest: int) -> Installment:
    return Installment(
        number=number, due_date=due, principal_minor=100_000, interest_minor=interest, fee_minor=500
    )


def fell_due(number: int, interest: int, fee: int) -> Body:
    postings = [posting(INTEREST, INCOME_INTEREST, interest)] if interest else []
    postings += [posting(FEE, INCOME_FEE, fee)] if fee else []
    fields = {"installment": number, "interest_recognised_minor": interest,
              "fee_recognised_minor": fee, "postings": tuple(postings)}  # fmt: skip
    return InstallmentFellDue, fields


def late_fee(number: int, amount: int) -> Body:
    fields = {"installment": number, "amount_minor": amount,
              "postings": (posting(FEE, INCOME_FEE, amount),)}  # fmt: skip
    return LateFeeAssessed, fields


def auto_debit(installments: tuple[int, ...], newest: int, today: date) -> Body:
    fields = {"installments": installments, "business_date": today,
              "request_command_id": auto_debit_command_id(LOAN, newest, today)}  # fmt: skip
    return AutoDebitDue, fields


def closed(today: date) -> Body:
    return BusinessDayClosed, {"business_date": today}


def first_installment_paid(amount: int, policy: Policy = DEFAULT_POLICY) -> LoanState:
    """Installment 1 fell due on Feb 1 and `amount` of it was collected the same day."""
    state = given(small_loan(), close_day(FEB_1), request("r1", amount_minor=amount), policy=policy)
    return after(state, success("s1", in_flight_id(state), amount), policy=policy)


# ---- OpenLoan ------------------------------------------------------------------------------


def test_open_loan_records_the_exact_schedule_and_disburses_the_principal() -> None:
    state, command = initial_state(LOAN), small_loan()
    decision = when(state, command)
    assert decision.events == expected(state, command, (LoanOpened, {
        "borrower_id": "B1", "currency": "CNY", "principal_minor": 300_000,
        "annual_rate_bps": 1200, "term_months": 3,
        "repayment_method": RepaymentMethod.EQUAL_PRINCIPAL, "fee_per_installment_minor": 500,
        "debit_account_ref": "B1",
        "schedule": (row(1, FEB_1, 3_000), row(2, MAR_1, 2_000), row(3, date(2026, 4, 1), 1_000)),
        "postings": (posting(PRINCIPAL, BANK, 300_000),),
    }))  # fmt: skip
    assert decision.outcome.status is OutcomeStatus.ACCEPTED
    assert decision.outcome.event_ids == (decision.events[0].event_id,)


def test_an_annuity_schedule_is_recorded_and_its_principal_sums_exactly() -> None:
    (opened,) = when(initial_state(LOAN), open_loan()).events
    assert isinstance(opened, LoanOpened)
    assert [(r.principal_minor, r.interest_minor) for r in opened.schedule[:2]] == [
        (788_488, 100_000),
        (796_373, 92_115),
    ]
    assert sum(r.principal_minor for r in opened.schedule) == 10_000_000


def test_debit_account_ref_defaults_to_the_borrower_id() -> None:
    (opened,) = when(initial_state(LOAN), small_loan(borrower_id="B7")).events
    assert isinstance(opened, LoanOpened)
    assert opened.debit_account_ref == "B7"


def test_debit_account_ref_is_kept_when_given() -> None:
    (opened,) = when(initial_state(LOAN), small_loan(debit_account_ref="card-token-9")).events
    assert isinstance(opened, LoanOpened)
    assert opened.debit_account_ref == "card-token-9"


def test_opening_an_opened_loan_is_rejected_as_loan_exists() -> None:
    decision = when(given(small_loan()), small_loan("open-2"))
    assert (decision.outcome.reason, beyond_the_refusal(decision)) == (
        RejectionReason.LOAN_EXISTS,
        (),
    )


def test_a_loan_that_could_owe_more_than_the_wire_carries_is_refused_at_opening() -> None:
    """Issue 16, 8: opened, the largest principal with the largest fee made `decide` raise when
    its debit was built (10^15 + 10^15 minor units in one `DeductionStarted`)."""
    huge = small_loan(
        principal_minor=MAX_AMOUNT_MINOR, fee_per_installment_minor=MAX_AMOUNT_MINOR,
        annual_rate_bps=100_000, term_months=1,
    )  # fmt: skip
    decision = when(initial_state(LOAN), huge)
    assert (decision.outcome.reason, decision.events) == (RejectionReason.INVALID_COMMAND, ())


LARGEST = 952_380_952_380_952  # with its 5 % late fee, 999,999,999,999,999.6 rounded up: 10^15


def test_the_largest_loan_accepted_lives_its_life_within_the_wire() -> None:
    """No interest or fee, one installment: the principal and its late fee fill 10^15 exactly."""

    def largest(principal: int) -> OpenLoan:
        return small_loan(
            principal_minor=principal, annual_rate_bps=0, fee_per_installment_minor=0,
            term_months=1,
        )  # fmt: skip

    assert when(initial_state(LOAN), largest(LARGEST + 1)).outcome.reason is (
        RejectionReason.INVALID_COMMAND
    )
    late = FIRST_DUE + timedelta(days=DEFAULT_POLICY.grace_days + 1)
    state = given(largest(LARGEST), close_day(FIRST_DUE), close_day(late), request("all"))
    [attempt] = state.attempts
    assert attempt.amount_minor == MAX_AMOUNT_MINOR
    paid = after(state, success("paid", attempt.attempt_id, MAX_AMOUNT_MINOR))
    assert paid.paid_off


# ---- CloseBusinessDay: installments fall due -----------------------------------------------


def test_a_day_before_any_due_date_only_closes_the_day() -> None:
    state, command = given(small_loan()), close_day(date(2026, 1, 15))
    assert when(state, command).events == expected(state, command, closed(date(2026, 1, 15)))


def test_an_installment_falls_due_on_its_due_date_recognising_interest_and_fee() -> None:
    state, command = given(small_loan()), close_day(FEB_1)
    assert when(state, command).events == expected(
        state, command, closed(FEB_1), fell_due(1, 3_000, 500), auto_debit((1,), 1, FEB_1)
    )


def test_skipped_days_make_every_passed_installment_fall_due_at_once() -> None:
    state, command = given(small_loan()), close_day(MAR_10)
    # Both are more than 3 days overdue: 5 % of the principal and interest owed on each.
    assert when(state, command, SKIPPING).events == expected(
        state, command,
        closed(MAR_10), fell_due(1, 3_000, 500), fell_due(2, 2_000, 500),
        late_fee(1, 5_150), late_fee(2, 5_100), auto_debit((1, 2), 2, MAR_10),
    )  # fmt: skip


def test_falling_due_recognises_only_what_was_not_recognised_early() -> None:
    # Installment 2 paid in full in January: its interest and fee were recognised at payment.
    state = given(small_loan(), request("r1", installments=(2,)))
    state = after(state, success("s1", in_flight_id(state), 102_500))
    command = close_day(MAR_1)
    assert when(state, command).events == expected(
        state, command,
        closed(MAR_1), fell_due(1, 3_000, 500), fell_due(2, 0, 0),
        late_fee(1, 5_150), auto_debit((1,), 2, MAR_1),
    )  # fmt: skip


def test_a_falling_due_installment_moves_interest_and_fee_into_receivables() -> None:
    _, events = history(small_loan(), close_day(MAR_10), policy=SKIPPING)
    balances = fold_balances(p for e in events for p in e.postings)
    assert (balances[INTEREST], balances[FEE], balances[INCOME_INTEREST], balances[INCOME_FEE]) == (
        5_000,
        500 + 500 + 5_150 + 5_100,
        -5_000,
        -(500 + 500 + 5_150 + 5_100),
    )


# ---- late fees -------------------------------------------------------------------------------


def test_no_late_fee_within_the_grace_period() -> None:
    state, command = given(small_loan(), close_day(FEB_1)), close_day(date(2026, 2, 4))
    assert when(state, command).events == expected(state, command, closed(date(2026, 2, 4)))


def test_late_fee_is_assessed_on_the_first_day_after_the_grace_period() -> None:
    state = given(small_loan(), close_day(FEB_1), close_day(date(2026, 2, 4)))
    command = close_day(date(2026, 2, 5))
    assert when(state, command).events == expected(
        state, command, closed(date(2026, 2, 5)), late_fee(1, 5_150)
    )


def test_no_late_fee_while_the_borrowers_debit_is_in_flight() -> None:
    """Issue 16, 4: asked for on the due date, answered on day +4: the borrower paid on time
    and is not charged for the channel's delay (the fee would have eaten the payment)."""
    state = given(small_loan(), close_day(FEB_1), request("r1"))
    command = close_day(date(2026, 2, 5))
    assert when(state, command).events == expected(state, command, closed(date(2026, 2, 5)))
    [attempt] = state.attempts
    paid = after(state, command, success("s1", attempt.attempt_id, attempt.amount_minor))
    assert (paid.installments[0].owed_minor, paid.installments[0].late_fee_minor) == (0, 0)


def test_a_late_fee_falls_on_the_first_close_after_the_debit_failed() -> None:
    state = given(small_loan(), close_day(FEB_1), request("r1"), close_day(date(2026, 2, 5)))
    [attempt] = state.attempts
    state = after(state, failure("f1", attempt.attempt_id, "no_funds", False))
    command = close_day(date(2026, 2, 6))
    assert when(state, command).events == expected(
        state, command, closed(date(2026, 2, 6)), late_fee(1, 5_150)
    )


def test_late_fee_is_assessed_only_once() -> None:
    state = given(small_loan(), close_day(FEB_1), close_day(date(2026, 2, 5)))
    command = close_day(date(2026, 2, 6))
    assert when(state, command).events == expected(state, command, closed(date(2026, 2, 6)))
    assert state.installments[0].late_fee_minor == 5_150


def test_no_late_fee_on_a_paid_installment() -> None:
    state = first_installment_paid(103_500)
    command = close_day(date(2026, 2, 5))
    assert when(state, command).events == expected(state, command, closed(date(2026, 2, 5)))


def test_late_fee_is_at_least_the_minimum() -> None:
    # 10_000 of principal still owed: 5 % is 500, below the 1_000 minimum.
    state = first_installment_paid(93_500)
    command = close_day(date(2026, 2, 5))
    assert when(state, command).events == expected(
        state, command, closed(date(2026, 2, 5)), late_fee(1, 1_000)
    )


def test_late_fee_rounds_half_up() -> None:
    # 10_010 still owed: 5 % is 500.5 fen, rounded half up to 501.
    policy = Policy(late_fee_min_minor=0)
    state = first_installment_paid(93_490, policy)
    command = close_day(date(2026, 2, 5))
    assert when(state, command, policy).events == expected(
        state, command, closed(date(2026, 2, 5)), late_fee(1, 501)
    )


# ---- auto-debit ------------------------------------------------------------------------------


def auto_debit_notice(events: tuple[Event, ...]) -> AutoDebitDue:
    (notice,) = [event for event in events if isinstance(event, AutoDebitDue)]
    return notice


def test_auto_debit_id_depends_only_on_loan_installment_and_date() -> None:
    state = given(small_loan())
    first = auto_debit_notice(when(state, close_day(FEB_1)).events)
    rerun = auto_debit_notice(when(state, close_day(FEB_1, command_id="close-rerun")).events)
    next_day = auto_debit_notice(when(state, close_day(date(2026, 2, 2))).events)
    other = given(small_loan(loan_id="L2"), loan_id="L2")
    other_loan = auto_debit_notice(when(other, close_day(FEB_1, loan_id="L2")).events)
    assert first.request_command_id == rerun.request_command_id
    assert first.request_command_id != next_day.request_command_id
    assert first.request_command_id != other_loan.request_command_id


def test_the_auto_debit_request_sent_twice_is_a_duplicate() -> None:
    state = given(small_loan())
    decision = when(state, close_day(FEB_1))
    notice = auto_debit_notice(decision.events)
    state = fold(state, decision.events)
    ask = request(notice.request_command_id, Source.AUTO_DEBIT, installments=notice.installments)
    first = when(state, ask)
    state = fold(state, first.events)
    again = when(state, request(notice.request_command_id, Source.AUTO_DEBIT,
                                installments=notice.installments, issued_at=at(30)))  # fmt: skip
    assert first.outcome.status is OutcomeStatus.ACCEPTED
    assert (again.outcome.status, again.outcome.event_ids, again.events) == (
        OutcomeStatus.DUPLICATE,
        first.outcome.event_ids,
        (),
    )


def test_no_auto_debit_when_the_policy_turns_it_off() -> None:
    policy = Policy(auto_debit=False)
    state, command = given(small_loan(), policy=policy), close_day(FEB_1)
    assert when(state, command, policy).events == expected(
        state, command, closed(FEB_1), fell_due(1, 3_000, 500)
    )


@pytest.mark.parametrize("business_date", [FEB_1, date(2026, 1, 31)], ids=["same", "earlier"])
def test_a_day_not_after_the_last_closed_one_is_stale(business_date: date) -> None:
    state = given(small_loan(), close_day(FEB_1))
    decision = when(state, close_day(business_date, command_id="close-again"))
    assert (decision.outcome.reason, beyond_the_refusal(decision)) == (
        RejectionReason.STALE_BUSINESS_DATE,
        (),
    )
