"""The waterfall: how collected money is applied, and the postings that move it."""

from __future__ import annotations

from collections.abc import Sequence

from ledger import accounts
from ledger.state import InstallmentState
from schemas.events import Allocation, Component, Posting

WATERFALL = (Component.FEE, Component.INTEREST, Component.PRINCIPAL)
RECEIVABLE = {
    Component.FEE: accounts.fee,
    Component.INTEREST: accounts.interest,
    Component.PRINCIPAL: accounts.principal,
}


def allocate(
    rows: Sequence[InstallmentState], amount_minor: int
) -> tuple[tuple[Allocation, ...], int]:
    """Apply `amount_minor` to `rows` oldest first; within one, fees, then interest, then
    principal. Returns the allocations and the excess that nothing was owed for."""
    remaining = amount_minor
    allocations: list[Allocation] = []
    for row in sorted(rows, key=lambda r: r.number):
        for component in WATERFALL:
            applied = min(remaining, row.owed(component))
            if applied > 0:
                allocations.append(
                    Allocation(installment=row.number, component=component, amount_minor=applied)
                )
                remaining -= applied
    assert sum(a.amount_minor for a in allocations) + remaining == amount_minor
    return tuple(allocations), remaining


def payment_postings(
    loan_id: str, channel: str, allocations: Sequence[Allocation], excess_minor: int, currency: str
) -> tuple[Posting, ...]:
    """Clearing -> each receivable (one posting per account), and the excess -> overpayment."""
    clearing = accounts.clearing(channel)
    per_account: dict[str, int] = {}
    for allocation in allocations:
        account = RECEIVABLE[allocation.component](loan_id)
        per_account[account] = per_account.get(account, 0) + allocation.amount_minor
    if excess_minor > 0:
        per_account[accounts.overpayment(loan_id)] = excess_minor
    return tuple(
        Posting(debit=clearing, credit=account, amount_minor=amount, currency=currency)
        for account, amount in per_account.items()
    )


def mirror(postings: Sequence[Posting]) -> tuple[Posting, ...]:
    """The reversing postings: same amounts, debit and credit swapped."""
    return tuple(p.model_copy(update={"debit": p.credit, "credit": p.debit}) for p in postings)


def unrecognised_charges(
    row: InstallmentState, allocations: Sequence[Allocation]
) -> tuple[int, int]:
    """(interest, fee) that must be recognised before `allocations` may be credited to `row`,
    because the installment has not fallen due yet. Late fees are recognised when assessed."""
    paying = {
        c: sum(
            a.amount_minor for a in allocations if a.installment == row.number and a.component is c
        )
        for c in WATERFALL
    }
    interest = row.paid_interest_minor + paying[Component.INTEREST] - row.interest_recognised_minor
    fee = row.paid_fee_minor + paying[Component.FEE] - row.fee_recognised_minor - row.late_fee_minor
    return max(0, interest), max(0, fee)
