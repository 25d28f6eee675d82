"""Fold postings into account balances (debits minus credits): the one fold every reader uses."""

from __future__ import annotations

from collections.abc import Iterable

from schemas.events import Posting


def apply_postings(balances: dict[str, int], postings: Iterable[Posting]) -> None:
    """Add each posting to `balances` in place (a fold step; callers own the dict)."""
    for posting in postings:
        balances[posting.debit] = balances.get(posting.debit, 0) + posting.amount_minor
        balances[posting.credit] = balances.get(posting.credit, 0) - posting.amount_minor


def fold_balances(postings: Iterable[Posting]) -> dict[str, int]:
    balances: dict[str, int] = {}
    apply_postings(balances, postings)
    return balances


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
