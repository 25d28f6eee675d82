"""The deduction attempt of docs/design.md: request, channel answers, success, failure."""

from __future__ import annotations

from ledger import accounts, identity
from ledger.allocation import allocate, payment_postings, unrecognised_charges
from ledger.policy import Policy
from ledger.recorder import Recorder
from ledger.state import Attempt, AttemptStatus, InstallmentState, LoanState
from schemas.commands import (
    AttemptCommand,
    ChannelAnswer,
    FlagStuckAttempt,
    ReportChannelFailure,
    ReportChannelProcessing,
    ReportChannelSuccess,
    ReportOrderNotFound,
    ReportOutcomeUnknown,
    ReportSubmission,
    RequestRepayment,
)
from schemas.events import (
    Allocation,
    ChargesRecognisedEarly,
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
from schemas.outcomes import RejectionReason

# ---- RequestRepayment --------------------------------------------------------------------


def request_refusal(state: LoanState, command: RequestRepayment) -> RejectionReason | None:
    """In the documented precedence: installment, closed, in flight, nothing due, amount."""
    named = command.installments or ()
    if any(state.installment(number) is None for number in named):
        return RejectionReason.UNKNOWN_INSTALLMENT
    if state.paid_off:
        return RejectionReason.LOAN_CLOSED
    if state.in_flight is not None:
        return RejectionReason.DEDUCTION_IN_PROGRESS
    owed = sum(row.owed_minor for row in targets(state, command))
    if owed == 0:
        return RejectionReason.NOTHING_DUE
    if command.amount_minor is not None and command.amount_minor > owed:
        return RejectionReason.AMOUNT_EXCEEDS_DUE
    return None


def targets(state: LoanState, command: RequestRepayment) -> list[InstallmentState]:
    """The installments a request pays: those named, else everything that fell due; unpaid only."""
    if command.installments is not None:
        named = sorted(set(command.installments))
        rows = [state.installments[number - 1] for number in named]
    else:
        rows = [row for row in state.installments if row.fell_due]
    return [row for row in rows if row.owed_minor > 0]


def start_deduction(recorder: Recorder, command: RequestRepayment, policy: Policy) -> None:
    rows = targets(recorder.state, command)
    amount = command.amount_minor or sum(row.owed_minor for row in rows)
    _start_attempt(recorder, policy.channels[0], amount, tuple(row.number for row in rows), command)


def _start_attempt(
    recorder: Recorder,
    channel: str,
    amount_minor: int,
    installments: tuple[int, ...],
    request: RequestRepayment | Attempt,
    previous_attempt_id: str | None = None,
) -> None:
    attempt_id = identity.attempt_id(
        recorder.state.loan_id, recorder.command_id, len(recorder.events)
    )
    terms = recorder.state.terms
    assert terms is not None
    recorder.emit(
        DeductionStarted(
            **recorder.envelope(),
            attempt_id=attempt_id,
            order_id=attempt_id,
            channel=channel,
            amount_minor=amount_minor,
            installments=installments,
            source=request.source,
            requested_by=request.requested_by,
            debit_account_ref=terms.debit_account_ref,
            previous_attempt_id=previous_attempt_id,
            currency=terms.currency,
            business_date=recorder.state.business_date or recorder.issued_at.date(),
        )
    )


# ---- channel answers ---------------------------------------------------------------------


def answer_refusal(state: LoanState, command: AttemptCommand) -> RejectionReason | None:
    attempt = state.attempt(command.attempt_id)
    if attempt is None:
        return RejectionReason.UNKNOWN_ATTEMPT
    if attempt.status is AttemptStatus.DEDUCTING:
        return None
    # A success that arrives after a definite failure still moved money: post it, never drop it.
    late_success = (
        isinstance(command, ReportChannelSuccess) and attempt.status is AttemptStatus.FAILED
    )
    return None if late_success else RejectionReason.ATTEMPT_SETTLED


def record_answer(
    recorder: Recorder, command: ChannelAnswer | FlagStuckAttempt, policy: Policy
) -> None:
    attempt = recorder.state.attempt(command.attempt_id)
    assert attempt is not None
    # Only the informational branches use this; success and failure stamp their own events.
    envelope = recorder.envelope()
    match command:
        case ReportChannelSuccess():
            succeed(recorder, attempt, command.channel_reference, command.amount_minor)
        case ReportChannelFailure():
            _fail(recorder, attempt, command, policy)
        case ReportOrderNotFound():
            recorder.emit(
                DeductionResubmissionRequested(
                    **envelope,
                    attempt_id=attempt.attempt_id,
                    order_id=attempt.order_id,
                    submission=attempt.submissions + 1,
                )
            )
        case ReportOutcomeUnknown():
            recorder.emit(
                DeductionOutcomeUnknown(
                    **envelope, attempt_id=attempt.attempt_id, detail=command.detail
                )
            )
        case ReportChannelProcessing():
            recorder.emit(DeductionProcessing(**envelope, attempt_id=attempt.attempt_id))
        case ReportSubmission():
            recorder.emit(DeductionSubmitted(**envelope, attempt_id=attempt.attempt_id))
        case FlagStuckAttempt():
            recorder.emit(DeductionStuck(**envelope, attempt_id=attempt.attempt_id))


def succeed(
    recorder: Recorder,
    attempt: Attempt,
    channel_reference: str,
    amount_minor: int,
    *,
    by_reconciliation: bool = False,
) -> None:
    """Money was collected: recognise early charges, apply the waterfall, refund any excess.
    Never more than the attempt asked for is booked (`flag_amount_above`)."""
    reported_minor, amount_minor = amount_minor, bookable(attempt, amount_minor)
    rows = [recorder.state.installments[number - 1] for number in attempt.installments]
    allocations, excess = allocate(rows, amount_minor)
    for row in rows:
        _recognise_early(recorder, row, allocations)
    loan_id = recorder.state.loan_id
    postings = payment_postings(loan_id, attempt.channel, allocations, excess, recorder.currency)
    recorder.emit(
        DeductionSucceeded(
            **recorder.envelope(postings),
            attempt_id=attempt.attempt_id,
            order_id=attempt.order_id,
            channel=attempt.channel,
            channel_reference=channel_reference,
            amount_minor=amount_minor,
            allocations=allocations,
            excess_minor=excess,
            found_by_reconciliation=by_reconciliation,
        )
    )
    report = "ReportUnrecordedSuccess" if by_reconciliation else "ReportChannelSuccess"
    flag_amount_above(recorder, attempt, channel_reference, report, reported_minor)
    if excess > 0:
        start_refund(recorder, attempt, excess)


def bookable(attempt: Attempt, reported_minor: int) -> int:
    """The one cap on what a report of the channel can book for an attempt (a success, or a
    second debit of its order): the attempt's own amount (issue 15)."""
    return min(reported_minor, attempt.amount_minor)


def flag_amount_above(
    recorder: Recorder, attempt: Attempt, reference: str, report_type: str, reported_minor: int
) -> None:
    """Whatever a report names above what is `bookable` (a channel's error, or a forged report)
    is booked nowhere and recorded for an operator instead: a borrower is never refunded money
    that was not asked for."""
    if reported_minor <= bookable(attempt, reported_minor):
        return
    recorder.emit(
        ReportedAmountAboveAttempt(
            **recorder.envelope(),
            attempt_id=attempt.attempt_id,
            order_id=attempt.order_id,
            channel_reference=reference,
            report_type=report_type,
            reported_minor=reported_minor,
            booked_minor=attempt.amount_minor,
        )
    )


def start_refund(recorder: Recorder, attempt: Attempt, amount_minor: int) -> None:
    terms = recorder.state.terms
    assert terms is not None
    recorder.emit(
        RefundStarted(
            **recorder.envelope(),
            refund_id=identity.refund_id(
                recorder.state.loan_id, recorder.command_id, len(recorder.events)
            ),
            channel=attempt.channel,
            order_id=attempt.order_id,
            amount_minor=amount_minor,
            debit_account_ref=terms.debit_account_ref,
            currency=terms.currency,
        )
    )


def _recognise_early(
    recorder: Recorder, row: InstallmentState, allocations: tuple[Allocation, ...]
) -> None:
    interest, fee = unrecognised_charges(row, allocations)
    if interest == 0 and fee == 0:
        return
    loan_id = recorder.state.loan_id
    postings: list[Posting] = []
    if interest > 0:
        postings.append(
            recorder.posting(accounts.interest(loan_id), accounts.INCOME_INTEREST, interest)
        )
    if fee > 0:
        postings.append(recorder.posting(accounts.fee(loan_id), accounts.INCOME_FEE, fee))
    recorder.emit(
        ChargesRecognisedEarly(
            **recorder.envelope(postings),
            installment=row.number,
            interest_recognised_minor=interest,
            fee_recognised_minor=fee,
        )
    )


def _fail(
    recorder: Recorder, attempt: Attempt, command: ReportChannelFailure, policy: Policy
) -> None:
    """A definite failure ends the attempt; only a retriable one moves on to the backup channel."""
    recorder.emit(
        DeductionFailed(
            **recorder.envelope(),
            attempt_id=attempt.attempt_id,
            code=command.code,
            retriable=command.retriable,
        )
    )
    backup = policy.backup_after(attempt.channel) if command.retriable else None
    # A late success of an earlier attempt may have paid meanwhile: never ask the backup
    # channel for more than is still owed, or the borrower is debited twice for the same money.
    owed = sum(recorder.state.installments[n - 1].owed_minor for n in attempt.installments)
    if backup is not None and owed > 0:
        _start_attempt(
            recorder,
            backup,
            min(attempt.amount_minor, owed),
            attempt.installments,
            attempt,
            previous_attempt_id=attempt.attempt_id,
        )
