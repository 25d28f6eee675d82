"""Repayment schedules built with exact Fraction arithmetic and one documented rounding rule.

Rounding rule of the product:

* All arithmetic is exact (`fractions.Fraction`); every amount is rounded to a fen only through
  `ledger.money.round_half_up` / `divide_round_half_up` (nearest fen, halves away from zero).
* The monthly rate is r = annual_rate_bps / 10_000 / 12, exactly.
* Each month's interest is round_half_up(remaining_principal * r).
* equal_installment (annuity, 等额本息): the payment A = P*r*(1+r)^n / ((1+r)^n - 1), or P/n when
  r == 0, rounded half up to a fen. Each month's principal is A - interest. The LAST installment's
  principal is whatever principal remains, so its total may differ from A by a few fen. Should
  the rounded A repay a tiny loan early, the principal is capped at what remains and the later
  rows carry no principal (and so no interest).
* equal_principal (等额本金): principal is P // n each month and the LAST month absorbs the
  remainder (`ledger.money.split_evenly`).
* Installment k (1-based) is due on add_months(first_due_date, k - 1), clamped to month end.
* Every installment carries the same flat fee.
"""

import calendar
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from fractions import Fraction

from ledger.money import BPS_PER_UNIT, divide_round_half_up, round_half_up, split_evenly

__all__ = [
    "RepaymentMethod",
    "ScheduledInstallment",
    "add_months",
    "build_schedule",
    "interest_total_minor",
    "monthly_rate",
    "principal_total_minor",
]

MONTHS_PER_YEAR = 12


class RepaymentMethod(StrEnum):
    """How principal is spread over the term."""

    EQUAL_INSTALLMENT = "equal_installment"  # annuity, 等额本息
    EQUAL_PRINCIPAL = "equal_principal"  # 等额本金


@dataclass(frozen=True, slots=True)
class ScheduledInstallment:
    """One row of a repayment schedule, amounts in minor units."""

    number: int
    due_date: date
    principal_minor: int
    interest_minor: int
    fee_minor: int

    @property
    def total_minor(self) -> int:
        return self.principal_minor + self.interest_minor + self.fee_minor


def add_months(start: date, months: int) -> date:
    """Return `start` moved by `months` calendar months, clamped to the end of a shorter month."""
    month_index = start.year * MONTHS_PER_YEAR + (start.month - 1) + months
    year, month_zero = divmod(month_index, MONTHS_PER_YEAR)
    last_day = calendar.monthrange(year, month_zero + 1)[1]
    return date(year, month_zero + 1, min(start.day, last_day))


def monthly_rate(annual_rate_bps: int) -> Fraction:
    """Return the exact monthly rate for an annual rate in basis points."""
    return Fraction(annual_rate_bps, BPS_PER_UNIT * MONTHS_PER_YEAR)


def _interest_on(principal_minor: int, rate: Fraction) -> int:
    """A month's interest, `round_half_up(principal_minor * rate)` in integers (per row)."""
    return divide_round_half_up(principal_minor * rate.numerator, rate.denominator)


def _annuity_payment(principal_minor: int, rate: Fraction, term_months: int) -> int:
    if rate == 0:
        return divide_round_half_up(principal_minor, term_months)
    growth = (1 + rate) ** term_months
    return round_half_up(principal_minor * rate * growth / (growth - 1))


def _equal_installment_principals(principal_minor: int, rate: Fraction, term: int) -> list[int]:
    payment = _annuity_payment(principal_minor, rate, term)
    remaining = principal_minor
    parts: list[int] = []
    for _ in range(term - 1):
        # For tiny principals the rounded-up payment can repay the loan early; capping keeps
        # every later principal part at zero instead of driving the last one negative.
        part = min(payment - _interest_on(remaining, rate), remaining)
        parts.append(part)
        remaining -= part
    return [*parts, remaining]


def _principal_parts(
    principal_minor: int, rate: Fraction, term: int, method: RepaymentMethod
) -> list[int]:
    if method is RepaymentMethod.EQUAL_INSTALLMENT:
        return _equal_installment_principals(principal_minor, rate, term)
    return split_evenly(principal_minor, term)


def build_schedule(
    principal_minor: int,
    annual_rate_bps: int,
    term_months: int,
    method: RepaymentMethod,
    first_due_date: date,
    fee_per_installment_minor: int = 0,
) -> tuple[ScheduledInstallment, ...]:
    """Build the full schedule under the rounding rule in the module docstring."""
    assert principal_minor > 0, f"principal must be positive, got {principal_minor}"
    assert term_months >= 1, f"term must be at least one month, got {term_months}"
    assert annual_rate_bps >= 0, f"rate must not be negative, got {annual_rate_bps}"
    assert fee_per_installment_minor >= 0, (
        f"fee must not be negative, got {fee_per_installment_minor}"
    )
    rate = monthly_rate(annual_rate_bps)
    parts = _principal_parts(principal_minor, rate, term_months, method)
    assert sum(parts) == principal_minor, "principal parts must sum to the principal"
    assert all(part >= 0 for part in parts), "principal parts must not be negative"
    rows: list[ScheduledInstallment] = []
    remaining = principal_minor
    for index, part in enumerate(parts):
        rows.append(
            ScheduledInstallment(
                number=index + 1,
                due_date=add_months(first_due_date, index),
                principal_minor=part,
                interest_minor=_interest_on(remaining, rate),
                fee_minor=fee_per_installment_minor,
            )
        )
        remaining -= part
    return tuple(rows)


def interest_total_minor(schedule: tuple[ScheduledInstallment, ...]) -> int:
    """Return the total interest of a schedule."""
    return sum(row.interest_minor for row in schedule)


def principal_total_minor(schedule: tuple[ScheduledInstallment, ...]) -> int:
    """Return the total principal of a schedule."""
    return sum(row.principal_minor for row in schedule)
