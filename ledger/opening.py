"""OpenLoan: the schedule is computed here, exactly, and the principal is disbursed."""

from __future__ import annotations

from ledger import accounts
from ledger.policy import Policy
from ledger.recorder import Recorder
from ledger.schedule import RepaymentMethod, ScheduledInstallment, build_schedule
from ledger.state import LoanState
from schemas.base import MAX_AMOUNT_MINOR
from schemas.commands import OpenLoan
from schemas.events import Installment, LoanOpened, Posting
from schemas.outcomes import RejectionReason


def refusal(state: LoanState, command: OpenLoan, policy: Policy) -> RejectionReason | None:
    """`invalid_command` (its fields contradict the wire's bounds) for a loan that could come
    to owe more than one amount on the wire may carry: every later sum then fits, so no
    command about it can fail to be written."""
    if largest_sum_minor(command, policy) > MAX_AMOUNT_MINOR:
        return RejectionReason.INVALID_COMMAND
    return RejectionReason.LOAN_EXISTS if state.opened else None


def largest_sum_minor(command: OpenLoan, policy: Policy) -> int:
    """An upper bound of any amount the loan's events carry: everything its schedule asks for
    (one request may ask for all of it), plus a late fee on every installment, each as if the
    whole schedule were owed."""
    total = sum(
        row.principal_minor + row.interest_minor + row.fee_minor for row in _schedule(command)
    )
    return total + command.term_months * policy.late_fee_minor(total)


def open_loan(recorder: Recorder, command: OpenLoan) -> None:
    schedule = _schedule(command)
    disbursement = Posting(
        debit=accounts.principal(command.loan_id),
        credit=accounts.BANK_FUNDING,
        amount_minor=command.principal_minor,
        currency=command.currency,
    )
    recorder.emit(
        LoanOpened(
            **recorder.envelope([disbursement]),
            borrower_id=command.borrower_id,
            currency=command.currency,
            principal_minor=command.principal_minor,
            annual_rate_bps=command.annual_rate_bps,
            term_months=command.term_months,
            repayment_method=command.repayment_method,
            fee_per_installment_minor=command.fee_per_installment_minor,
            debit_account_ref=command.debit_account_ref or command.borrower_id,
            schedule=tuple(
                Installment(
                    number=row.number,
                    due_date=row.due_date,
                    principal_minor=row.principal_minor,
                    interest_minor=row.interest_minor,
                    fee_minor=row.fee_minor,
                )
                for row in schedule
            ),
        )
    )


def _schedule(command: OpenLoan) -> tuple[ScheduledInstallment, ...]:
    return build_schedule(
        principal_minor=command.principal_minor,
        annual_rate_bps=command.annual_rate_bps,
        term_months=command.term_months,
        method=RepaymentMethod(command.repayment_method.value),
        first_due_date=command.first_due_date,
        fee_per_installment_minor=command.fee_per_installment_minor,
    )
