"""The balance record on the compacted `ledger.balances` topic, keyed by account."""

from __future__ import annotations

from typing import Literal

from schemas.base import Account, Currency, SignedMinor, WireModel


class BalanceRecord(WireModel):
    """`balance_minor` is debits minus credits of every posting to the account so far."""

    type: Literal["Balance"] = "Balance"
    account: Account
    balance_minor: SignedMinor
    currency: Currency
    as_of_event_id: str
    schema_version: Literal[1] = 1
