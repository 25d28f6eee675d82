"""The balance record on the compacted `ledger.balances` topic, keyed by account."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.base import Account, Currency, SignedMinor, WireModel


class BalanceRecord(WireModel):
    """`balance_minor` is debits minus credits of every posting to the account so far.

    Accounts of one loan (`loan:{id}:*`) have one record, keyed by the account, on the partition
    of the loan's events. Accounts shared by many loans (`channel:*`, `income:*`, `bank:*`) are
    kept per events partition so no partition funnels every posting: one record per shard,
    keyed `{account}@{shard}`, and the account's balance is the sum of its shards' records.
    """

    type: Literal["Balance"] = "Balance"
    account: Account
    balance_minor: SignedMinor
    currency: Currency
    as_of_event_id: str
    shard: int | None = Field(default=None, ge=0, description="events partition, shared accounts")
    schema_version: Literal[1] = 1

    @property
    def key(self) -> str:
        return self.account if self.shard is None else f"{self.account}@{self.shard}"


def is_shared(account: str) -> bool:
    """Shared accounts take postings from every loan, so they are sharded by partition."""
    return not account.startswith("loan:")
