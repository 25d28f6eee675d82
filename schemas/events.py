"""Events: the immutable system of record on `ledger.events`, written by the decider only.

Every event carries the envelope (`event_id`, `loan_id`, `seq`, `causation_id`, `causation_hash`,
`occurred_at`, `postings`, `schema_version`). `seq` is 1, 2, 3... per loan with no gaps;
`event_id` and everything else derive from the command, so deciding the same command on the same
state again yields byte-identical events. `causation_hash` is the hash of the command's payload,
kept so that folding the log rebuilds the idempotency record.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, TypeAdapter, model_validator

from schemas.base import (
    Account,
    AmountMinor,
    ChannelName,
    Currency,
    Identifier,
    InstallmentNumber,
    NonNegativeMinor,
    ShortText,
    WireModel,
)
from schemas.commands import DiscrepancyKind, RepaymentMethod, Source
from schemas.outcomes import RejectionReason


class Posting(WireModel):
    """One double-entry transfer: balanced by construction (one amount, debit and credit)."""

    debit: Account
    credit: Account
    amount_minor: AmountMinor
    currency: Currency

    @model_validator(mode="after")
    def _distinct_accounts(self) -> Posting:
        if self.debit == self.credit:
            raise ValueError("a posting must move money between two different accounts")
        return self


class Component(StrEnum):
    """What part of an installment an amount belongs to, in waterfall order."""

    FEE = "fee"
    INTEREST = "interest"
    PRINCIPAL = "principal"


class Allocation(WireModel):
    """Money applied to one component of one installment."""

    installment: InstallmentNumber
    component: Component
    amount_minor: AmountMinor


class Installment(WireModel):
    number: InstallmentNumber
    due_date: date
    principal_minor: NonNegativeMinor
    interest_minor: NonNegativeMinor
    fee_minor: NonNegativeMinor


class EventBase(WireModel):
    event_id: Identifier
    loan_id: Identifier
    seq: Annotated[int, Field(ge=1)]
    causation_id: Identifier
    causation_hash: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    occurred_at: AwareDatetime
    postings: tuple[Posting, ...] = ()
    schema_version: Literal[1] = 1


class LoanOpened(EventBase):
    """The loan exists; the principal is disbursed (principal receivable <- bank)."""

    type: Literal["LoanOpened"] = "LoanOpened"
    borrower_id: Identifier
    currency: Currency
    principal_minor: AmountMinor
    annual_rate_bps: int
    term_months: int
    repayment_method: RepaymentMethod
    fee_per_installment_minor: NonNegativeMinor
    debit_account_ref: Identifier
    schedule: tuple[Installment, ...]


class BusinessDayClosed(EventBase):
    type: Literal["BusinessDayClosed"] = "BusinessDayClosed"
    business_date: date


class InstallmentFellDue(EventBase):
    """Interest and fee of the installment not yet recognised are recognised now."""

    type: Literal["InstallmentFellDue"] = "InstallmentFellDue"
    installment: InstallmentNumber
    interest_recognised_minor: NonNegativeMinor
    fee_recognised_minor: NonNegativeMinor


class LateFeeAssessed(EventBase):
    type: Literal["LateFeeAssessed"] = "LateFeeAssessed"
    installment: InstallmentNumber
    amount_minor: AmountMinor


class AutoDebitDue(EventBase):
    """The scheduler must send RequestRepayment(source=auto_debit) with `request_command_id`.

    The id derives from loan, installment and date, so a rerun of the scheduler is a duplicate.
    """

    type: Literal["AutoDebitDue"] = "AutoDebitDue"
    installments: tuple[InstallmentNumber, ...]
    request_command_id: Identifier
    business_date: date


class ChargesRecognisedEarly(EventBase):
    """Interest or fee of an installment paid before it fell due is recognised at payment."""

    type: Literal["ChargesRecognisedEarly"] = "ChargesRecognisedEarly"
    installment: InstallmentNumber
    interest_recognised_minor: NonNegativeMinor
    fee_recognised_minor: NonNegativeMinor


class DeductionStarted(EventBase):
    """An attempt to debit the borrower; durably logged before any channel is called."""

    type: Literal["DeductionStarted"] = "DeductionStarted"
    attempt_id: Identifier
    order_id: Identifier
    channel: ChannelName
    amount_minor: AmountMinor
    installments: tuple[InstallmentNumber, ...]
    source: Source
    requested_by: Identifier
    debit_account_ref: Identifier
    previous_attempt_id: Identifier | None = None
    # Added after the first release, hence optional: the decider always fills them in; the
    # gateway needs both for the channel call, and reconciliation matches on the business date.
    currency: Currency | None = None
    business_date: date | None = Field(
        default=None, description="the loan's business date when the attempt started"
    )


class AttemptEvent(EventBase):
    attempt_id: Identifier


class DeductionSubmitted(AttemptEvent):
    type: Literal["DeductionSubmitted"] = "DeductionSubmitted"


class DeductionProcessing(AttemptEvent):
    type: Literal["DeductionProcessing"] = "DeductionProcessing"


class DeductionOutcomeUnknown(AttemptEvent):
    """Timeout or error: the attempt stays in flight, to be queried; never a failure."""

    type: Literal["DeductionOutcomeUnknown"] = "DeductionOutcomeUnknown"
    detail: Literal["timeout", "error"]


class DeductionResubmissionRequested(AttemptEvent):
    """The channel has no such order: submit again with the SAME order id."""

    type: Literal["DeductionResubmissionRequested"] = "DeductionResubmissionRequested"
    order_id: Identifier
    submission: Annotated[int, Field(ge=2)]


class DeductionStuck(AttemptEvent):
    type: Literal["DeductionStuck"] = "DeductionStuck"


class DeductionSucceeded(AttemptEvent):
    """Money collected: clearing -> receivables by the waterfall, any excess -> overpayment."""

    type: Literal["DeductionSucceeded"] = "DeductionSucceeded"
    order_id: Identifier
    channel: ChannelName
    channel_reference: ShortText
    amount_minor: AmountMinor
    allocations: tuple[Allocation, ...]
    excess_minor: NonNegativeMinor
    found_by_reconciliation: bool = False


class DeductionFailed(AttemptEvent):
    type: Literal["DeductionFailed"] = "DeductionFailed"
    code: Identifier
    retriable: bool


class DeductionReversed(AttemptEvent):
    """The channel reversed a success: mirror postings; the allocations are undone."""

    type: Literal["DeductionReversed"] = "DeductionReversed"
    reverses_event_id: Identifier
    allocations: tuple[Allocation, ...]
    excess_minor: NonNegativeMinor


class DuplicateDebitRecorded(AttemptEvent):
    """The card was debited again for the same order: clearing -> overpayment, to be refunded."""

    type: Literal["DuplicateDebitRecorded"] = "DuplicateDebitRecorded"
    channel_reference: ShortText
    amount_minor: AmountMinor


class StatementDiscrepancyFound(AttemptEvent):
    """Reconciliation saw a difference no compensation can settle: an operator must look."""

    type: Literal["StatementDiscrepancyFound"] = "StatementDiscrepancyFound"
    order_id: Identifier
    kind: DiscrepancyKind
    statement_date: date
    detail: ShortText


class ReportedAmountAboveAttempt(AttemptEvent):
    """A channel's success, or a duplicate debit on a statement, named more money than its
    attempt asked for. Only the attempt's amount is booked (the event before this one); the rest
    is for an operator to look into with the channel. No postings. Added in issue 15: readers that
    fold postings need no change."""

    type: Literal["ReportedAmountAboveAttempt"] = "ReportedAmountAboveAttempt"
    order_id: Identifier
    channel_reference: ShortText
    report_type: Identifier
    reported_minor: AmountMinor
    booked_minor: AmountMinor


class RefundStarted(EventBase):
    type: Literal["RefundStarted"] = "RefundStarted"
    refund_id: Identifier
    channel: ChannelName
    order_id: Identifier
    amount_minor: AmountMinor
    debit_account_ref: Identifier
    currency: Currency | None = None  # optional for the same reason as DeductionStarted's


class RefundSucceeded(EventBase):
    """Money returned to the borrower: overpayment -> clearing."""

    type: Literal["RefundSucceeded"] = "RefundSucceeded"
    refund_id: Identifier
    channel_reference: ShortText


class RefundFailed(EventBase):
    type: Literal["RefundFailed"] = "RefundFailed"
    refund_id: Identifier
    code: Identifier


class CommandRejected(EventBase):
    """A command this loan refused, so that a repeat of its `command_id` is answered with the
    same refusal however the loan changed since (a repeat returns the original outcome). No
    postings. Added after the first release: readers that fold postings need no change."""

    type: Literal["CommandRejected"] = "CommandRejected"
    command_type: Identifier
    reason: RejectionReason


Event = Annotated[
    LoanOpened
    | BusinessDayClosed
    | InstallmentFellDue
    | LateFeeAssessed
    | AutoDebitDue
    | ChargesRecognisedEarly
    | DeductionStarted
    | DeductionSubmitted
    | DeductionProcessing
    | DeductionOutcomeUnknown
    | DeductionResubmissionRequested
    | DeductionStuck
    | DeductionSucceeded
    | DeductionFailed
    | DeductionReversed
    | DuplicateDebitRecorded
    | StatementDiscrepancyFound
    | ReportedAmountAboveAttempt
    | RefundStarted
    | RefundSucceeded
    | RefundFailed
    | CommandRejected,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(raw: bytes | str) -> Event:
    """Validate one event from its JSON bytes; raises pydantic.ValidationError."""
    return EVENT_ADAPTER.validate_json(raw)


def encode_event(event: EventBase) -> bytes:
    """The one byte encoding of an event: re-deciding a command reproduces these exact bytes."""
    return event.model_dump_json().encode()
