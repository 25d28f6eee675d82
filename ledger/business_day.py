"""CloseBusinessDay: installments fall due, late fees are assessed, auto-debits are asked for."""

from __future__ import annotations

from datetime import date, timedelta

from ledger import accounts, identity
from ledger.policy import Policy
from ledger.recorder import Recorder
from ledger.state import InstallmentState, LoanState
from schemas.commands import CloseBusinessDay
from schemas.events import (
    AutoDebitDue,
    BusinessDayClosed,
    Component,
    InstallmentFellDue,
    LateFeeAssessed,
    Posting,
)
from schemas.outcomes import RejectionReason


def refusal(
    state: LoanState, command: CloseBusinessDay, policy: Policy, partition_date: date | None
) -> RejectionReason | None:
    last = state.business_date
    if last is not None and command.business_date <= last:
        return RejectionReason.STALE_BUSINESS_DATE
    known = [day for day in (last, partition_date) if day is not None]
    if not known and state.installments:  # never closed: its first due date is its horizon
        known = [state.installments[0].due_date]
    if known and too_far_ahead(command.business_date, max(known), policy):
        return RejectionReason.BUSINESS_DATE_TOO_FAR_AHEAD
    return None


def too_far_ahead(business_date: date, latest: date, policy: Policy) -> bool:
    """The one rule for how far a business day may jump (`Policy.max_days_ahead`): the loan's
    own close, and the partition's tick (`ledger.business_clock.tick_verdict`)."""
    # A difference, not `latest + max_days_ahead`: that overflows for a date near 9999-12-31.
    return business_date - latest > timedelta(days=policy.max_days_ahead)


def close_business_day(recorder: Recorder, command: CloseBusinessDay, policy: Policy) -> None:
    today = command.business_date
    recorder.emit(BusinessDayClosed(**recorder.envelope(), business_date=today))
    newly_due = [row.number for row in recorder.state.installments if _falls_due(row, today)]
    for number in newly_due:
        _fall_due(recorder, recorder.state.installments[number - 1])
    paying = awaiting_payment(recorder.state)
    for row in recorder.state.installments:
        if row.number not in paying and _late(row, today, policy):
            _assess_late_fee(recorder, row, policy)
    if policy.auto_debit and newly_due:
        _ask_for_auto_debit(recorder, max(newly_due), today)


def awaiting_payment(state: LoanState) -> tuple[int, ...]:
    """The installments an attempt in flight is paying: no late fee falls on them meanwhile."""
    attempt = state.in_flight
    return () if attempt is None else attempt.installments


def _falls_due(row: InstallmentState, today: date) -> bool:
    return not row.fell_due and row.due_date <= today


def _late(row: InstallmentState, today: date, policy: Policy) -> bool:
    if not row.fell_due or row.late_fee_minor != 0:  # the cheap tests first: this runs daily
        return False
    owed = (row.principal_minor - row.paid_principal_minor) + (
        row.interest_minor - row.paid_interest_minor
    )  # row.owed(PRINCIPAL) + row.owed(INTEREST), written out
    return owed > 0 and today > row.due_date + timedelta(days=policy.grace_days)


def _fall_due(recorder: Recorder, row: InstallmentState) -> None:
    loan_id = recorder.state.loan_id
    interest = row.interest_minor - row.interest_recognised_minor
    fee = row.fee_minor - row.fee_recognised_minor
    postings: list[Posting] = []
    if interest > 0:
        postings.append(
            recorder.posting(accounts.interest(loan_id), accounts.INCOME_INTEREST, interest)
        )
    if fee > 0:
        postings.append(recorder.posting(accounts.fee(loan_id), accounts.INCOME_FEE, fee))
    recorder.emit(
        InstallmentFellDue(
            **recorder.envelope(postings),
            installment=row.number,
            interest_recognised_minor=interest,
            fee_recognised_minor=fee,
        )
    )


def _assess_late_fee(recorder: Recorder, row: InstallmentState, policy: Policy) -> None:
    amount = policy.late_fee_minor(row.owed(Component.PRINCIPAL) + row.owed(Component.INTEREST))
    if amount <= 0:
        return
    loan_id = recorder.state.loan_id
    posting = recorder.posting(accounts.fee(loan_id), accounts.INCOME_FEE, amount)
    recorder.emit(
        LateFeeAssessed(**recorder.envelope([posting]), installment=row.number, amount_minor=amount)
    )


def _ask_for_auto_debit(recorder: Recorder, newest_due: int, today: date) -> None:
    owing = tuple(
        row.number for row in recorder.state.installments if row.fell_due and row.owed_minor > 0
    )
    if not owing:
        return
    recorder.emit(
        AutoDebitDue(
            **recorder.envelope(),
            installments=owing,
            request_command_id=identity.auto_debit_command_id(
                recorder.state.loan_id, newest_due, today
            ),
            business_date=today,
        )
    )
