"""Shared wire types: the strict, frozen base model and the constrained scalar types."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# Money bound: far above any loan (10^15 fen is 10 trillion yuan) yet safe for every JSON reader
# that parses integers as doubles (2^53 ~ 9.007e15), so no consumer ever rounds an amount.
MAX_AMOUNT_MINOR = 10**15
IDENTIFIER_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"

Identifier = Annotated[str, Field(pattern=IDENTIFIER_PATTERN, min_length=1, max_length=64)]
"""command_id, loan_id, borrower_id, attempt ids...: 1-64 chars of A-Za-z0-9._:-"""

ChannelName = Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,32}$")]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. CNY")]
AmountMinor = Annotated[int, Field(gt=0, le=MAX_AMOUNT_MINOR, description="minor units, > 0")]
NonNegativeMinor = Annotated[int, Field(ge=0, le=MAX_AMOUNT_MINOR, description="minor units")]
SignedMinor = Annotated[int, Field(ge=-MAX_AMOUNT_MINOR * 1000, le=MAX_AMOUNT_MINOR * 1000)]
InstallmentNumber = Annotated[int, Field(ge=1, le=600)]
Account = Annotated[str, Field(min_length=1, max_length=200)]
ShortText = Annotated[str, Field(max_length=200)]


class WireModel(BaseModel):
    """Every message on the wire: immutable, no unknown fields, no silent type coercion."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
