"""Commands: what upstream services, the scheduler, the gateway and reconciliation ask for.

Public commands (any upstream service may send them): OpenLoan, RequestRepayment,
CloseBusinessDay, and the business clock's CloseBusinessDayForPartition (one per partition of
`ledger.commands`, not per loan: docs/design.md, "The business clock"). The others are internal:
the gateway reports what a payment channel answered, reconciliation reports what a channel
statement shows, the sweeper flags stuck attempts.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, Field, TypeAdapter

from schemas.base import (
    AmountMinor,
    ChannelName,
    Currency,
    Identifier,
    InstallmentNumber,
    NonNegativeMinor,
    ShortText,
    WireModel,
)


class RepaymentMethod(StrEnum):
    EQUAL_INSTALLMENT = "equal_installment"
    EQUAL_PRINCIPAL = "equal_principal"


class Source(StrEnum):
    """The three doors a repayment request comes through."""

    APP = "app"
    AUTO_DEBIT = "auto_debit"
    COLLECTION = "collection"


def _in_utc(value: datetime) -> datetime:
    if value.utcoffset() != timedelta(0):
        raise ValueError("issued_at must be in UTC (Z or +00:00)")
    return value


IssuedAt = Annotated[
    AwareDatetime, AfterValidator(_in_utc), Field(description="RFC 3339 with a UTC offset")
]


class CommandBase(WireModel):
    command_id: Identifier
    loan_id: Identifier
    issued_at: IssuedAt
    schema_version: Literal[1] = 1


# ---- public --------------------------------------------------------------------------------


class OpenLoan(CommandBase):
    type: Literal["OpenLoan"] = "OpenLoan"
    borrower_id: Identifier
    principal_minor: AmountMinor
    currency: Currency
    annual_rate_bps: Annotated[int, Field(ge=0, le=100_000)]
    term_months: Annotated[int, Field(ge=1, le=600)]
    repayment_method: RepaymentMethod
    first_due_date: date
    fee_per_installment_minor: NonNegativeMinor = 0
    debit_account_ref: Identifier | None = Field(
        default=None, description="token of the card/account to debit; never a card number"
    )


class RequestRepayment(CommandBase):
    type: Literal["RequestRepayment"] = "RequestRepayment"
    source: Source
    requested_by: Identifier
    installments: tuple[InstallmentNumber, ...] | None = Field(
        default=None, min_length=1, max_length=600, description="default: everything due"
    )
    amount_minor: AmountMinor | None = Field(default=None, description="default: all owed")


class CloseBusinessDay(CommandBase):
    type: Literal["CloseBusinessDay"] = "CloseBusinessDay"
    business_date: date


class CloseBusinessDayForPartition(WireModel):
    """The business clock's tick: close `business_date` for every loan of one partition of
    `ledger.commands`. Sent to that partition (the record's partition must be `partition`); the
    decider closes the day at once for the loans something happens to (an installment falls
    due, a late fee), and for every other loan just before its next command."""

    type: Literal["CloseBusinessDayForPartition"] = "CloseBusinessDayForPartition"
    command_id: Identifier
    issued_at: IssuedAt
    partition: Annotated[int, Field(ge=0, le=100_000)]
    business_date: date
    schema_version: Literal[1] = 1


# ---- internal: what a payment channel answered (sent by the gateway) ----------------------


class AttemptCommand(CommandBase):
    attempt_id: Identifier


class ReportSubmission(AttemptCommand):
    """The channel acknowledged the submitted order; its outcome is not known yet."""

    type: Literal["ReportSubmission"] = "ReportSubmission"


class ReportChannelSuccess(AttemptCommand):
    type: Literal["ReportChannelSuccess"] = "ReportChannelSuccess"
    channel_reference: ShortText
    amount_minor: AmountMinor


class ReportChannelFailure(AttemptCommand):
    """A definite failure: the channel says the card was not and will not be debited."""

    type: Literal["ReportChannelFailure"] = "ReportChannelFailure"
    code: Identifier
    retriable: bool


class ReportChannelProcessing(AttemptCommand):
    type: Literal["ReportChannelProcessing"] = "ReportChannelProcessing"


class ReportOrderNotFound(AttemptCommand):
    """A query found no such order: the request never reached the channel."""

    type: Literal["ReportOrderNotFound"] = "ReportOrderNotFound"


class ReportOutcomeUnknown(AttemptCommand):
    """A timeout or an error: the debit may or may not have happened."""

    type: Literal["ReportOutcomeUnknown"] = "ReportOutcomeUnknown"
    detail: Literal["timeout", "error"]


class FlagStuckAttempt(AttemptCommand):
    type: Literal["FlagStuckAttempt"] = "FlagStuckAttempt"


# ---- internal: what a channel statement shows (sent by reconciliation) --------------------


class StatementCommand(CommandBase):
    order_id: Identifier
    channel: ChannelName
    statement_date: date


class ReportReversal(StatementCommand):
    """The channel reversed a success we had posted."""

    type: Literal["ReportReversal"] = "ReportReversal"


class ReportDuplicateDebit(StatementCommand):
    """The channel debited the card again for an order we had already been paid for."""

    type: Literal["ReportDuplicateDebit"] = "ReportDuplicateDebit"
    channel_reference: ShortText
    amount_minor: AmountMinor


class ReportUnrecordedSuccess(StatementCommand):
    """The statement shows a success our books do not have (the answer was lost)."""

    type: Literal["ReportUnrecordedSuccess"] = "ReportUnrecordedSuccess"
    channel_reference: ShortText
    amount_minor: AmountMinor


class DiscrepancyKind(StrEnum):
    MISSING_FROM_STATEMENT = "missing_from_statement"
    AMOUNT_MISMATCH = "amount_mismatch"
    REVERSAL_NOT_ON_STATEMENT = "reversal_not_on_statement"
    BOOKED_ON_ANOTHER_DAY = "booked_on_another_day"


class ReportStatementDiscrepancy(StatementCommand):
    """A difference with no money to move: our success is on no statement of the day, the one
    before or the one after; the statement shows another amount than we collected; or it shows
    as succeeded a debit our books hold reversed (a statement line carries the order's current
    status, so a reversal the channel never made: one reported by someone else); or it books our
    debit more than a day away from the business day we started it on."""

    type: Literal["ReportStatementDiscrepancy"] = "ReportStatementDiscrepancy"
    kind: DiscrepancyKind
    detail: ShortText


# ---- internal: refund answers (sent by the gateway) ----------------------------------------


class RefundCommand(CommandBase):
    refund_id: Identifier


class ReportRefundSuccess(RefundCommand):
    type: Literal["ReportRefundSuccess"] = "ReportRefundSuccess"
    channel_reference: ShortText


class ReportRefundFailure(RefundCommand):
    type: Literal["ReportRefundFailure"] = "ReportRefundFailure"
    code: Identifier


PublicCommand = OpenLoan | RequestRepayment | CloseBusinessDay
ChannelAnswer = (
    ReportSubmission
    | ReportChannelSuccess
    | ReportChannelFailure
    | ReportChannelProcessing
    | ReportOrderNotFound
    | ReportOutcomeUnknown
)
StatementFinding = (
    ReportReversal | ReportDuplicateDebit | ReportUnrecordedSuccess | ReportStatementDiscrepancy
)
RefundAnswer = ReportRefundSuccess | ReportRefundFailure

LoanCommand = PublicCommand | ChannelAnswer | FlagStuckAttempt | StatementFinding | RefundAnswer
Command = Annotated[LoanCommand, Field(discriminator="type")]
"""A command about one loan (keyed by its loan_id)."""
COMMAND_ADAPTER: TypeAdapter[Command] = TypeAdapter(Command)
TopicCommand = Annotated[LoanCommand | CloseBusinessDayForPartition, Field(discriminator="type")]
"""Anything `ledger.commands` carries: a loan's command or a partition's business-day tick."""
TOPIC_COMMAND_ADAPTER: TypeAdapter[TopicCommand] = TypeAdapter(TopicCommand)


def parse_command(raw: bytes | str) -> Command:
    """Validate one loan's command from its JSON bytes; raises pydantic.ValidationError."""
    return COMMAND_ADAPTER.validate_json(raw)


def parse_topic_command(raw: bytes | str) -> LoanCommand | CloseBusinessDayForPartition:
    """Validate one record of `ledger.commands`; raises pydantic.ValidationError."""
    return TOPIC_COMMAND_ADAPTER.validate_json(raw)
