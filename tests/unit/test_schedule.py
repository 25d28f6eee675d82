"""Repayment schedules checked against published amortization examples and properties."""

from datetime import date
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.schedule import (
    RepaymentMethod,
    ScheduledInstallment,
    add_months,
    build_schedule,
    interest_total_minor,
    principal_total_minor,
)

EQUAL_INSTALLMENT = RepaymentMethod.EQUAL_INSTALLMENT
EQUAL_PRINCIPAL = RepaymentMethod.EQUAL_PRINCIPAL
START = date(2024, 1, 15)


def schedule(
    principal: int, bps: int, months: int, method: RepaymentMethod
) -> tuple[ScheduledInstallment, ...]:
    return build_schedule(principal, bps, months, method, START)


def amounts(row: ScheduledInstallment) -> tuple[int, int, int]:
    return row.principal_minor, row.interest_minor, row.total_minor


# --- equal installment (annuity, 等额本息) against published figures ---------------------------


def test_us_200000_at_6_percent_for_30_years() -> None:
    # Worked textbook exercise "You take out a $200,000 mortgage for 30 years at 6%"
    # (answerprime.com, "$200 000 mortgage monthly payment"; same payment on mathondemand.com):
    # payment $1,199.10; month 1 interest $1,000.00 principal $199.10; month 2 $999.00 / $200.10;
    # month 12 $988.77 / $210.33; interest column of the first year as listed below.
    # Its total interest $231,676.38 is 360 x $1,199.10 - $200,000, i.e. it assumes a level last
    # payment, which our "last row absorbs the remainder" rule does not, so it is not checked.
    rows = schedule(20_000_000, 600, 360, EQUAL_INSTALLMENT)
    assert {row.total_minor for row in rows[:-1]} == {119_910}
    assert amounts(rows[0]) == (19_910, 100_000, 119_910)
    assert amounts(rows[1]) == (20_010, 99_900, 119_910)
    assert amounts(rows[11]) == (21_033, 98_877, 119_910)
    first_year_interest = [
        *(100_000, 99_900, 99_800, 99_700, 99_599, 99_497),
        *(99_395, 99_293, 99_190, 99_086, 98_982, 98_877),
    ]
    assert [row.interest_minor for row in rows[:12]] == first_year_interest


def test_cny_1_200_000_at_10_percent_for_12_months() -> None:
    # g230.com Q&A (120万, 1 year, 10%): 月还款额 105,499.06, 还款总额 1,265,988.78,
    # 利息总额 65,988.78; ou.biz.narkive.tw: first month's interest 120万 x 10% / 12 = 10,000.
    # The last row follows from the published total: 1,265,988.78 - 11 x 105,499.06 = 105,499.12.
    rows = schedule(120_000_000, 1000, 12, EQUAL_INSTALLMENT)
    assert {row.total_minor for row in rows[:-1]} == {10_549_906}
    assert amounts(rows[0]) == (9_549_906, 1_000_000, 10_549_906)
    assert rows[-1].total_minor == 10_549_912
    assert interest_total_minor(rows) == 6_598_878
    assert sum(row.total_minor for row in rows) == 126_598_878


def test_cny_1_220_000_at_7_25_percent_for_12_years() -> None:
    # mz51.vip 房贷计算器 (Present=122万, Interest=7.25%, Number=12 years): 等额本息 12,709.42
    # a month; principal 5,338.59 / 5,370.84 / 5,403.29 in months 1-3; interest column below.
    rows = schedule(122_000_000, 725, 144, EQUAL_INSTALLMENT)
    assert {row.total_minor for row in rows[:-1]} == {1_270_942}
    assert [row.principal_minor for row in rows[:3]] == [533_859, 537_084, 540_329]
    published_interest = [
        *(737_083, 733_858, 730_613, 727_349, 724_064, 720_760, 717_436, 714_092),
        *(710_728, 707_343, 703_938, 700_513, 697_066, 693_599, 690_111, 686_602),
    ]
    assert [row.interest_minor for row in rows[:16]] == published_interest


@pytest.mark.parametrize(
    ("principal", "bps", "months", "payment", "first_interest"),
    [
        # 372181.com: 100万, 4.90 %, 20 years: 6,544.44 a month, month 1 interest 4,083.33.
        (100_000_000, 490, 240, 654_444, 408_333),
        # wwwbz417.com: 120万, 4.90 %, 30 years: 6,368.72 a month, month 1 interest 4,900.00.
        (120_000_000, 490, 360, 636_872, 490_000),
        # vdgb.cn: 63万, 4.90 %, 30 years: 3,343.58 a month (month 1 interest 630000 x r).
        (63_000_000, 490, 360, 334_358, 257_250),
        # 13l.net: 30万, 4.90 %, 30 years: 1,592.18 a month (month 1 interest 300000 x r).
        (30_000_000, 490, 360, 159_218, 122_500),
        # 13l.net: 10万, 10 %, 12 months: 8,791.59 a month (month 1 interest 100000 x r).
        (10_000_000, 1000, 12, 879_159, 83_333),
    ],
)
def test_published_annuity_payments(
    principal: int, bps: int, months: int, payment: int, first_interest: int
) -> None:
    rows = schedule(principal, bps, months, EQUAL_INSTALLMENT)
    assert {row.total_minor for row in rows[:-1]} == {payment}
    assert rows[0].interest_minor == first_interest
    assert rows[0].principal_minor == payment - first_interest


# --- equal principal (等额本金) against published figures ----------------------------------------


def test_cny_1_220_000_equal_principal_at_7_25_percent_for_12_years() -> None:
    # mz51.vip 房贷计算器 (122万, 7.25 %, 12 years), 等额本金 columns: principal 8,472.22 a
    # month; interest column below. Its "金额" column rounds the unrounded sum (15,843.06 in
    # month 1) while our rule rounds each part, giving 8,472.22 + 7,370.83 = 15,843.05.
    rows = schedule(122_000_000, 725, 144, EQUAL_PRINCIPAL)
    assert {row.principal_minor for row in rows[:-1]} == {847_222}
    published_interest = [
        *(737_083, 731_965, 726_846, 721_727, 716_609, 711_490, 706_372, 701_253),
        *(696_134, 691_016, 685_897, 680_778, 675_660, 670_541, 665_422, 660_304),
    ]
    assert [row.interest_minor for row in rows[:16]] == published_interest
    # Not published (hand-computed under our rule): the last principal is
    # 1,220,000 - 143 x 8,472.22 = 8,472.54, its interest 8,472.54 x 7.25 % / 12 = 51.187 -> 51.19.
    assert amounts(rows[-1]) == (847_254, 5_119, 852_373)


def test_cny_630_000_equal_principal_at_4_9_percent_for_30_years() -> None:
    # vdgb.cn: 63万, 4.90 %, 30 years, 等额本金: first payment 4,322.50, falling 7.15 a month.
    rows = schedule(63_000_000, 490, 360, EQUAL_PRINCIPAL)
    assert {row.principal_minor for row in rows} == {175_000}
    assert amounts(rows[0]) == (175_000, 257_250, 432_250)
    assert rows[1].total_minor == 432_250 - 715
    # Hand-computed: 1,750 x 4.9 % / 12 = 7.1458 -> 7.15 on the last row.
    assert amounts(rows[-1]) == (175_000, 715, 175_715)


def test_cny_100_000_equal_principal_at_7_2_percent_for_12_months() -> None:
    # gongweng.com/jy/314001: 10万, 7.2 %, 1 year, 等额本金: 8,333.33 principal a month,
    # payments 8,933.33, 8,883.33, 8,833.33 in months 1-3, total interest 3,900.
    # (Its later rows are miscomputed on the page and not used.)
    rows = schedule(10_000_000, 720, 12, EQUAL_PRINCIPAL)
    assert [row.total_minor for row in rows[:3]] == [893_333, 888_333, 883_333]
    assert interest_total_minor(rows) == 390_000
    # The last month absorbs 100,000 - 11 x 8,333.33 = 8,333.37; interest 8,333.37 x 0.6 % = 50.
    assert amounts(rows[-1]) == (833_337, 5_000, 838_337)


# --- calendar -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (date(2023, 1, 31), 1, date(2023, 2, 28)),
        (date(2024, 1, 31), 1, date(2024, 2, 29)),
        (date(2100, 1, 31), 1, date(2100, 2, 28)),
        (date(2000, 1, 31), 1, date(2000, 2, 29)),
        (date(2024, 1, 31), 2, date(2024, 3, 31)),
        (date(2024, 2, 29), 12, date(2025, 2, 28)),
        (date(2024, 2, 29), 48, date(2028, 2, 29)),
        (date(2024, 8, 31), 1, date(2024, 9, 30)),
        (date(2024, 12, 15), 1, date(2025, 1, 15)),
        (date(2024, 3, 31), -1, date(2024, 2, 29)),
        (date(2024, 5, 17), 0, date(2024, 5, 17)),
        (date(2024, 1, 1), 359, date(2053, 12, 1)),
    ],
)
def test_add_months(start: date, months: int, expected: date) -> None:
    assert add_months(start, months) == expected


def test_due_dates_clamp_without_drifting() -> None:
    rows = build_schedule(30_000, 0, 4, EQUAL_PRINCIPAL, date(2024, 1, 31))
    due = [row.due_date for row in rows]
    assert due == [date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 31), date(2024, 4, 30)]


# --- edge cases ----------------------------------------------------------------------------------


def test_zero_rate_equal_installment() -> None:
    rows = schedule(100_000, 0, 3, EQUAL_INSTALLMENT)
    assert [amounts(row) for row in rows] == [
        (33_333, 0, 33_333),
        (33_333, 0, 33_333),
        (33_334, 0, 33_334),
    ]


def test_zero_rate_equal_principal() -> None:
    rows = schedule(100_000, 0, 3, EQUAL_PRINCIPAL)
    assert [row.principal_minor for row in rows] == [33_333, 33_333, 33_334]
    assert interest_total_minor(rows) == 0


def test_zero_rate_payment_rounds_half_up() -> None:
    # 5 / 2 = 2.5 -> 3: the last month gets what remains.
    rows = schedule(5, 0, 2, EQUAL_INSTALLMENT)
    assert [row.principal_minor for row in rows] == [3, 2]


@pytest.mark.parametrize("method", list(RepaymentMethod))
def test_one_month_loan(method: RepaymentMethod) -> None:
    rows = schedule(10_000_000, 1200, 1, method)
    assert len(rows) == 1
    assert amounts(rows[0]) == (10_000_000, 100_000, 10_100_000)
    assert rows[0].number == 1
    assert rows[0].due_date == START


@pytest.mark.parametrize("method", list(RepaymentMethod))
def test_fee_on_every_row(method: RepaymentMethod) -> None:
    rows = build_schedule(10_000_000, 1200, 12, method, START, fee_per_installment_minor=500)
    assert {row.fee_minor for row in rows} == {500}
    assert all(row.total_minor == row.principal_minor + row.interest_minor + 500 for row in rows)


def test_tiny_loan_repaid_early_leaves_empty_rows() -> None:
    # 2 / 3 = 0.67 -> 1 a month repays the loan in month 2; nothing is left for month 3.
    rows = schedule(2, 0, 3, EQUAL_INSTALLMENT)
    assert [row.principal_minor for row in rows] == [1, 1, 0]


def test_totals() -> None:
    rows = schedule(10_000_000, 1200, 12, EQUAL_PRINCIPAL)
    assert principal_total_minor(rows) == 10_000_000
    # Hand-computed: 1,000 x (12 + 11 + ... + 1) / 12 = 6,500 exactly; row rounding cancels.
    assert interest_total_minor(rows) == 650_000
    assert amounts(rows[0]) == (833_333, 100_000, 933_333)


@pytest.mark.parametrize(
    ("principal", "bps", "months", "fee"),
    [(0, 1200, 12, 0), (-1, 1200, 12, 0), (100, -1, 12, 0), (100, 1200, 0, 0), (100, 1200, 12, -1)],
)
def test_invalid_inputs_are_bugs(principal: int, bps: int, months: int, fee: int) -> None:
    with pytest.raises(AssertionError):
        build_schedule(principal, bps, months, EQUAL_INSTALLMENT, START, fee)


# --- properties ----------------------------------------------------------------------------------

principals = st.integers(min_value=1, max_value=10**10)
rates_bps = st.integers(min_value=0, max_value=3600)
terms = st.integers(min_value=1, max_value=360)


def balances_before(rows: tuple[ScheduledInstallment, ...], principal: int) -> list[int]:
    before = []
    for row in rows:
        before.append(principal)
        principal -= row.principal_minor
    return before


@settings(deadline=None)
@given(principals, rates_bps, terms, st.sampled_from(list(RepaymentMethod)))
def test_schedule_invariants(
    principal: int, bps: int, months: int, method: RepaymentMethod
) -> None:
    rows = schedule(principal, bps, months, method)
    assert len(rows) == months
    assert [row.number for row in rows] == list(range(1, months + 1))
    assert principal_total_minor(rows) == principal
    assert all(row.principal_minor >= 0 and row.interest_minor >= 0 for row in rows)
    assert all(row.fee_minor == 0 for row in rows)
    assert all(a.due_date < b.due_date for a, b in pairwise(rows))


@settings(deadline=None)
@given(principals, rates_bps, terms)
def test_equal_installment_totals_are_level(principal: int, bps: int, months: int) -> None:
    rows = schedule(principal, bps, months, EQUAL_INSTALLMENT)
    before = balances_before(rows, principal)
    pairs = list(zip(rows[:-1], before[:-1], strict=True))
    # Rows that do not finish the loan all pay the same amount.
    assert len({row.total_minor for row, owed in pairs if row.principal_minor < owed}) <= 1
    # Once a tiny loan is repaid early, later rows carry nothing.
    assert all(row.total_minor == 0 for row, owed in zip(rows, before, strict=True) if owed == 0)


@settings(deadline=None)
@given(principals, rates_bps, terms)
def test_equal_principal_parts_are_level(principal: int, bps: int, months: int) -> None:
    rows = schedule(principal, bps, months, EQUAL_PRINCIPAL)
    assert {row.principal_minor for row in rows[:-1]} <= {principal // months}
    assert rows[-1].principal_minor == principal - (months - 1) * (principal // months)
