"""The payment channels' HTTP wire (CONTRACT): debit, query, refund and statement messages.

What the gateway and the reconciler send to a channel and read back. The channel simulator
(development tooling) serves the same messages; it never defines them.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from schemas.base import AmountMinor, ChannelName, Currency, Identifier, ShortText, WireModel


class DebitRequest(WireModel):
    order_id: Identifier
    account_ref: Identifier
    amount_minor: AmountMinor
    currency: Currency
    business_date: date


class DebitSucceeded(WireModel):
    order_id: Identifier
    status: Literal["succeeded"] = "succeeded"
    channel_reference: ShortText
    amount_minor: AmountMinor


class DebitFailed(WireModel):
    order_id: Identifier
    status: Literal["failed"] = "failed"
    code: Identifier
    retriable: bool


class DebitProcessing(WireModel):
    order_id: Identifier
    status: Literal["processing"] = "processing"


class DebitNotFound(WireModel):
    order_id: Identifier
    status: Literal["not_found"] = "not_found"


DebitAnswer = Annotated[
    DebitSucceeded | DebitFailed | DebitProcessing | DebitNotFound, Field(discriminator="status")
]
DEBIT_ANSWER: TypeAdapter[DebitAnswer] = TypeAdapter(DebitAnswer)


class RefundRequest(WireModel):
    refund_id: Identifier
    order_id: Identifier
    account_ref: Identifier
    amount_minor: AmountMinor
    currency: Currency


class RefundAnswer(WireModel):
    refund_id: Identifier
    status: Literal["succeeded"] = "succeeded"
    channel_reference: ShortText


class StatementLine(WireModel):
    order_id: Identifier
    status: Literal["succeeded", "reversed"]
    amount_minor: AmountMinor
    channel_reference: ShortText
    business_date: date


class Statement(WireModel):
    channel: ChannelName
    business_date: date
    lines: tuple[StatementLine, ...]
