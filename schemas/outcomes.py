"""The outcome record: exactly one per command, on `ledger.outcomes`."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from schemas.base import Identifier, WireModel


class OutcomeStatus(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"


class RejectionReason(StrEnum):
    """Why a command was refused. When several apply, the first in this order wins:

    1. invalid_command        the bytes are not a valid command (shell), or fields contradict
    2. loan_quarantined       the loan's log has a seq gap or an unreadable event (an operator
                              alert): nothing is decided for it until its log is repaired
    3. idempotency_conflict   the command id was accepted before with a different payload
    4. unknown_loan           the loan was never opened (every command but OpenLoan)
       loan_exists            OpenLoan for a loan id already opened
    5. unknown_installment    RequestRepayment names an installment the loan does not have
       unknown_attempt        a channel answer or statement line for an attempt we never started
                              (or a statement line from another channel than the attempt's)
       unknown_refund         a refund answer for a refund we never started
       stale_business_date    CloseBusinessDay for a date not after the loan's last closed day
                              (or a partition's tick for a date not after the partition's)
       business_date_too_far_ahead  a business date more than the policy's `max_days_ahead`
                              after the loan's latest (or the partition's tick after its clock)
    6. loan_closed            every installment is paid: nothing can be requested any more
    7. deduction_in_progress  an attempt is in flight for this loan, whatever the door
    8. nothing_due            the named (or due) installments are fully paid
    9. amount_exceeds_due     a partial amount larger than what is owed on those installments
    10. attempt_settled       a channel answer for an attempt that is no longer in flight
       attempt_not_succeeded  a reversal or duplicate-debit line for an attempt that did not succeed
       refund_settled         a refund answer for a refund that already ended
       finding_already_recorded  a duplicate debit whose channel reference is already on our
                              books (the success's own, or an earlier duplicate): never refund twice
    """

    INVALID_COMMAND = "invalid_command"
    LOAN_QUARANTINED = "loan_quarantined"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    UNKNOWN_LOAN = "unknown_loan"
    LOAN_EXISTS = "loan_exists"
    UNKNOWN_INSTALLMENT = "unknown_installment"
    UNKNOWN_ATTEMPT = "unknown_attempt"
    UNKNOWN_REFUND = "unknown_refund"
    STALE_BUSINESS_DATE = "stale_business_date"
    BUSINESS_DATE_TOO_FAR_AHEAD = "business_date_too_far_ahead"
    LOAN_CLOSED = "loan_closed"
    DEDUCTION_IN_PROGRESS = "deduction_in_progress"
    NOTHING_DUE = "nothing_due"
    AMOUNT_EXCEEDS_DUE = "amount_exceeds_due"
    ATTEMPT_SETTLED = "attempt_settled"
    ATTEMPT_NOT_SUCCEEDED = "attempt_not_succeeded"
    REFUND_SETTLED = "refund_settled"
    FINDING_ALREADY_RECORDED = "finding_already_recorded"


class Outcome(WireModel):
    """What became of one command. `event_ids` are the events it produced (or, for a duplicate,
    the events the original produced).

    A partition's business-day tick (`CloseBusinessDayForPartition`) is about no single loan: its
    outcome has no `loan_id` but the `partition`, and instead of event ids (one tick can close
    the day for thousands of loans) `loans_closed`, the loans it closed the day for at once."""

    type: Literal["Outcome"] = "Outcome"
    command_id: str
    loan_id: str | None
    status: OutcomeStatus
    reason: RejectionReason | None = None
    event_ids: tuple[str, ...] = ()
    partition: int | None = None
    loans_closed: int | None = None
    schema_version: Literal[1] = 1


def accepted(command_id: str, loan_id: Identifier, event_ids: tuple[str, ...]) -> Outcome:
    return Outcome(
        command_id=command_id, loan_id=loan_id, status=OutcomeStatus.ACCEPTED, event_ids=event_ids
    )


def rejected(command_id: str, loan_id: str | None, reason: RejectionReason) -> Outcome:
    return Outcome(
        command_id=command_id, loan_id=loan_id, status=OutcomeStatus.REJECTED, reason=reason
    )


def duplicate(command_id: str, loan_id: str, event_ids: tuple[str, ...]) -> Outcome:
    return Outcome(
        command_id=command_id, loan_id=loan_id, status=OutcomeStatus.DUPLICATE, event_ids=event_ids
    )


def partition_answer(
    command_id: str,
    partition: int,
    status: OutcomeStatus,
    reason: RejectionReason | None = None,
    loans_closed: int | None = None,
) -> Outcome:
    """The outcome of a partition's business-day tick."""
    return Outcome(
        command_id=command_id,
        loan_id=None,
        status=status,
        reason=reason,
        partition=partition,
        loans_closed=loans_closed,
    )
