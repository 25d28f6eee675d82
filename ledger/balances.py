"""Fold postings into account balances (debits minus credits): the one fold every reader uses.

`account_moves` is the rule, written once; `apply_postings` folds it into plain balances (the
CLI, replay, the demo's checks) and `project_postings` into the published balance records of the
projector, where shared accounts are kept per events partition.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping

from schemas.balances import BalanceRecord, is_shared
from schemas.events import Event, Posting


def account_moves(postings: Iterable[Posting]) -> Iterator[tuple[str, int, str]]:
    """(account, signed amount, currency) for both sides of each posting: + debit, - credit."""
    for posting in postings:
        # Balanced by construction; asserted again on this side of the wire.
        assert posting.amount_minor > 0, f"non-positive posting {posting}"
        assert posting.debit != posting.credit, f"self-transfer {posting}"
        yield posting.debit, posting.amount_minor, posting.currency
        yield posting.credit, -posting.amount_minor, posting.currency


def apply_postings(balances: dict[str, int], postings: Iterable[Posting]) -> None:
    """Add each posting to `balances` in place (a fold step; callers own the dict)."""
    for account, amount, _currency in account_moves(postings):
        balances[account] = balances.get(account, 0) + amount


def fold_balances(postings: Iterable[Posting]) -> dict[str, int]:
    balances: dict[str, int] = {}
    apply_postings(balances, postings)
    return balances


def project_postings(
    balances: MutableMapping[str, tuple[int, str]],
    event: Event,
    partition: int,
    loan_moves: MutableMapping[str, int] | None = None,
) -> list[BalanceRecord]:
    """Add the event's postings to `balances` (balance key -> (balance, currency)); return the
    new balance record of every account touched. Shared accounts are kept per `partition`.
    `loan_moves`, if given, is the event's loan's own share of each balance key (what the
    projector's snapshot of that loan holds): the same amounts are added to it."""
    touched: dict[str, BalanceRecord] = {}
    for account, amount, posted_in in account_moves(event.postings):
        shard = partition if is_shared(account) else None
        key = account if shard is None else f"{account}@{shard}"
        balance, currency = balances.get(key, (0, posted_in))
        assert currency == posted_in, f"{account} holds {currency}, posting in {posted_in}"
        balances[key] = (balance + amount, currency)
        if loan_moves is not None:
            loan_moves[key] = loan_moves.get(key, 0) + amount
        touched[key] = BalanceRecord(
            account=account,
            balance_minor=balance + amount,
            currency=currency,
            as_of_event_id=event.event_id,
            shard=shard,
        )
    return list(touched.values())


def paid_by_card(loan_id: str, postings: Iterable[Posting]) -> int:
    """Net money the loan's card paid through the channels: every posting from a channel's
    clearing account into the loan's accounts, minus every one back (reversals, refunds)."""
    own = f"loan:{loan_id}:"
    net = 0
    for posting in postings:
        if posting.debit.startswith("channel:") and posting.credit.startswith(own):
            net += posting.amount_minor
        elif posting.credit.startswith("channel:") and posting.debit.startswith(own):
            net -= posting.amount_minor
    return net
