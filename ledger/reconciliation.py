"""Statement findings and refund answers: every discrepancy becomes a compensating event."""

from __future__ import annotations

from ledger import accounts
from ledger.allocation import mirror, payment_postings
from ledger.deduction import bookable, flag_amount_above, start_refund, succeed
from ledger.recorder import Recorder
from ledger.state import Attempt, AttemptStatus, LoanState, RefundStatus
from schemas.commands import (
    RefundAnswer,
    ReportDuplicateDebit,
    ReportRefundSuccess,
    ReportReversal,
    ReportStatementDiscrepancy,
    ReportUnrecordedSuccess,
    StatementFinding,
)
from schemas.events import (
    Allocation,
    DeductionReversed,
    DuplicateDebitRecorded,
    RefundFailed,
    RefundSucceeded,
    StatementDiscrepancyFound,
)
from schemas.outcomes import RejectionReason

COLLECTED = (AttemptStatus.SUCCEEDED, AttemptStatus.REVERSED)


def finding_refusal(state: LoanState, command: StatementFinding) -> RejectionReason | None:
    attempt = state.attempt(command.order_id)  # the order id is the attempt id
    if attempt is None or attempt.channel != command.channel:
        return RejectionReason.UNKNOWN_ATTEMPT
    match command:
        case ReportReversal() if attempt.status is not AttemptStatus.SUCCEEDED:
            return RejectionReason.ATTEMPT_NOT_SUCCEEDED
        case ReportDuplicateDebit() if attempt.status not in COLLECTED:
            return RejectionReason.ATTEMPT_NOT_SUCCEEDED
        case ReportDuplicateDebit() if _known_reference(attempt, command.channel_reference):
            return RejectionReason.FINDING_ALREADY_RECORDED
        case ReportUnrecordedSuccess() if attempt.status in COLLECTED:
            return RejectionReason.ATTEMPT_SETTLED
    return None


def _known_reference(attempt: Attempt, reference: str) -> bool:
    """The same channel debit seen twice must never be refunded twice."""
    return reference == attempt.channel_reference or reference in attempt.duplicate_debits


def record_finding(recorder: Recorder, command: StatementFinding) -> None:
    attempt = recorder.state.attempt(command.order_id)
    assert attempt is not None
    match command:
        case ReportReversal():
            _reverse(recorder, attempt)
        case ReportDuplicateDebit():
            _duplicate_debit(recorder, attempt, command)
        case ReportStatementDiscrepancy():
            recorder.emit(
                StatementDiscrepancyFound(
                    **recorder.envelope(),
                    attempt_id=attempt.attempt_id,
                    order_id=attempt.order_id,
                    kind=command.kind,
                    statement_date=command.statement_date,
                    detail=command.detail,
                )
            )
        case ReportUnrecordedSuccess():
            succeed(
                recorder,
                attempt,
                command.channel_reference,
                command.amount_minor,
                by_reconciliation=True,
            )


def _reverse(recorder: Recorder, attempt: Attempt) -> None:
    """Mirror the success's postings exactly; the installments it paid reopen."""
    assert attempt.success_event_id is not None
    loan_id = recorder.state.loan_id
    allocations = tuple(
        Allocation(installment=a.installment, component=a.component, amount_minor=a.amount_minor)
        for a in attempt.allocations
    )
    original = payment_postings(
        loan_id, attempt.channel, allocations, attempt.excess_minor, recorder.currency
    )
    recorder.emit(
        DeductionReversed(
            **recorder.envelope(mirror(original)),
            attempt_id=attempt.attempt_id,
            reverses_event_id=attempt.success_event_id,
            allocations=allocations,
            excess_minor=attempt.excess_minor,
        )
    )


def _duplicate_debit(recorder: Recorder, attempt: Attempt, command: ReportDuplicateDebit) -> None:
    """Booked and refunded up to the attempt's amount: a second debit of one order cannot be
    larger than the order (`bookable`)."""
    loan_id = recorder.state.loan_id
    amount = bookable(attempt, command.amount_minor)
    posting = recorder.posting(
        accounts.clearing(attempt.channel), accounts.overpayment(loan_id), amount
    )
    recorder.emit(
        DuplicateDebitRecorded(
            **recorder.envelope([posting]),
            attempt_id=attempt.attempt_id,
            channel_reference=command.channel_reference,
            amount_minor=amount,
        )
    )
    flag_amount_above(
        recorder, attempt, command.channel_reference, command.type, command.amount_minor
    )
    start_refund(recorder, attempt, amount)


def refund_refusal(state: LoanState, command: RefundAnswer) -> RejectionReason | None:
    refund = state.refund(command.refund_id)
    if refund is None:
        return RejectionReason.UNKNOWN_REFUND
    return None if refund.status is RefundStatus.PENDING else RejectionReason.REFUND_SETTLED


def record_refund_answer(recorder: Recorder, command: RefundAnswer) -> None:
    refund = recorder.state.refund(command.refund_id)
    assert refund is not None
    if isinstance(command, ReportRefundSuccess):
        loan_id = recorder.state.loan_id
        posting = recorder.posting(
            accounts.overpayment(loan_id), accounts.clearing(refund.channel), refund.amount_minor
        )
        recorder.emit(
            RefundSucceeded(
                **recorder.envelope([posting]),
                refund_id=refund.refund_id,
                channel_reference=command.channel_reference,
            )
        )
    else:
        # The money stays in overpayment, visible on the balance, for an operator to act on.
        recorder.emit(
            RefundFailed(**recorder.envelope(), refund_id=refund.refund_id, code=command.code)
        )
