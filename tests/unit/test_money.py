"""Unit tests for the ledger's integer money arithmetic and its one rounding rule."""

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.money import BPS_PER_UNIT, divide_round_half_up, round_half_up, split_evenly


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [
        (0, 1, 0),
        (10, 5, 2),
        (-10, 5, -2),
        (1, 2, 1),
        (-1, 2, -1),
        (3, 2, 2),
        (-3, 2, -2),
        (5, 2, 3),
        (-5, 2, -3),
        (1, 3, 0),
        (2, 3, 1),
        (-1, 3, 0),
        (-2, 3, -1),
        (149, 100, 1),
        (150, 100, 2),
        (151, 100, 2),
        (-149, 100, -1),
        (-150, 100, -2),
        (-151, 100, -2),
        (7, 1, 7),
        (10**20 + 1, 2, 5 * 10**19 + 1),
    ],
)
def test_divide_round_half_up_table(numerator: int, denominator: int, expected: int) -> None:
    assert divide_round_half_up(numerator, denominator) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Fraction(0), 0),
        (Fraction(1, 2), 1),
        (Fraction(-1, 2), -1),
        (Fraction(5, 2), 3),
        (Fraction(-5, 2), -3),
        (Fraction(4999, 10000), 0),
        (Fraction(-4999, 10000), 0),
        (Fraction(2, 1), 2),
    ],
)
def test_round_half_up_table(value: Fraction, expected: int) -> None:
    assert round_half_up(value) == expected


def test_divide_round_half_up_rejects_non_positive_denominator() -> None:
    with pytest.raises(AssertionError):
        divide_round_half_up(1, 0)
    with pytest.raises(AssertionError):
        divide_round_half_up(1, -2)


@pytest.mark.parametrize(
    ("total", "parts", "expected"),
    [
        (10, 1, [10]),
        (10, 2, [5, 5]),
        (10, 3, [3, 3, 4]),
        (10_000_000, 12, [833_333] * 11 + [833_337]),
        (2, 5, [0, 0, 0, 0, 2]),
        (0, 3, [0, 0, 0]),
    ],
)
def test_split_evenly_table(total: int, parts: int, expected: list[int]) -> None:
    assert split_evenly(total, parts) == expected


def test_bps_per_unit() -> None:
    assert BPS_PER_UNIT == 10_000


@given(st.integers(min_value=0, max_value=10**15), st.integers(min_value=1, max_value=1000))
def test_split_evenly_sums_exactly_and_only_last_differs(total: int, parts: int) -> None:
    shares = split_evenly(total, parts)
    assert len(shares) == parts
    assert sum(shares) == total
    assert all(share == total // parts for share in shares[:-1])
    assert 0 <= shares[-1] - shares[0] <= total % parts


@given(
    st.integers(min_value=-(10**15), max_value=10**15), st.integers(min_value=1, max_value=10**6)
)
def test_divide_round_half_up_is_within_half_a_unit(numerator: int, denominator: int) -> None:
    exact = Fraction(numerator, denominator)
    rounded = divide_round_half_up(numerator, denominator)
    assert abs(rounded - exact) <= Fraction(1, 2)
    if abs(rounded - exact) == Fraction(1, 2):
        # A tie goes away from zero.
        assert abs(rounded) > abs(exact)


@given(
    st.integers(min_value=-(10**15), max_value=10**15), st.integers(min_value=1, max_value=10**6)
)
def test_round_half_up_is_symmetric_about_zero(numerator: int, denominator: int) -> None:
    value = Fraction(numerator, denominator)
    assert round_half_up(-value) == -round_half_up(value)
