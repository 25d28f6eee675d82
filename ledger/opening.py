"""OpenLoan: the schedule is computed here, exactly, and the principal is disbursed."""

from __future__ import annotations

from ledger import accounts
from ledger.recorder import Recorder
from ledger.schedule import RepaymentMethod, build_schedule
from ledger.state import LoanState
from schemas.commands import OpenLoan
from schemas.events import Installment, LoanOpened, Posting
from schemas.outcomes import RejectionReason


def refusal(state: LoanState) -> RejectionReason | None:
    return RejectionReason.LOAN_EXISTS if state.opened else None


def open_loan(recorder: Recorder, command: OpenLoan) -> None:
    schedule = build_schedule(
        principal_minor=command.principal_minor,
        annual_rate_bps=command.annual_rate_bps,
        term_months=command.term_months,
        method=RepaymentMethod(command.repayment_method.value),
        first_due_date=command.first_due_date,
        fee_per_installment_minor=command.fee_per_installment_minor,
    )
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
