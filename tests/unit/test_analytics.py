"""The report's figures from hand-built event logs: given(events, timestamps) -> then(figures)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime
from typing import Any

import pytest

from ledger.accounts import receivables
from ledger.analytics import (
    Headline,
    build_report,
    format_duration,
    format_yuan,
    nearest_rank,
    settlement,
)
from schemas.commands import RepaymentMethod, Source
from schemas.events import (
    Allocation,
    BusinessDayClosed,
    Component,
    DeductionFailed,
    DeductionOutcomeUnknown,
    DeductionReversed,
    DeductionStarted,
    DeductionSucceeded,
    Event,
    EventBase,
    InstallmentFellDue,
    LoanOpened,
    RefundFailed,
    RefundStarted,
    RefundSucceeded,
)
from tests.support.builders import LOAN, close_day, history, open_loan, posting, request, when
from tests.support.builders import success as success_command

DAY1, DAY2 = date(2026, 2, 1), date(2026, 2, 2)
OPENED_AT = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
BANK = "bank:funding"


class Log:
    """Builds one loan's events with their envelopes and Kafka timestamps, in log order."""

    def __init__(self) -> None:
        self.records: list[tuple[Event, int]] = []
        self.seqs: dict[str, int] = {}

    def add(self, kind: type[EventBase], loan: str, at_ms: int, **fields: Any) -> Event:
        seq = self.seqs.get(loan, 0) + 1
        self.seqs[loan] = seq
        event: Any = kind(
            event_id=f"{loan}-e{seq}", loan_id=loan, seq=seq, causation_id=f"{loan}-c{seq}",
            causation_hash="0" * 32, occurred_at=OPENED_AT, **fields,
        )  # fmt: skip
        self.records.append((event, at_ms))
        return event  # type: ignore[no-any-return]

    def opened(self, loan: str, principal_minor: int, at_ms: int = 0) -> None:
        self.add(
            LoanOpened, loan, at_ms, postings=(posting(f"loan:{loan}:principal", BANK,
            principal_minor),), borrower_id="B1", currency="CNY", principal_minor=principal_minor,
            annual_rate_bps=1200, term_months=3, repayment_method=RepaymentMethod.EQUAL_PRINCIPAL,
            fee_per_installment_minor=0, debit_account_ref="B1", schedule=(),
        )  # fmt: skip

    def closed(self, loan: str, day: date, at_ms: int = 0) -> None:
        self.add(BusinessDayClosed, loan, at_ms, business_date=day)

    def started(
        self, loan: str, attempt: str, channel: str, amount_minor: int, day: date | None, at_ms: int
    ) -> None:
        self.add(
            DeductionStarted, loan, at_ms, attempt_id=attempt, order_id=attempt, channel=channel,
            amount_minor=amount_minor, installments=(1,), source=Source.APP, requested_by="u",
            debit_account_ref="B1", currency="CNY", business_date=day,
        )  # fmt: skip

    def succeeded(
        self, loan: str, attempt: str, channel: str, amount_minor: int, at_ms: int
    ) -> Event:
        allocation = Allocation(
            installment=1, component=Component.PRINCIPAL, amount_minor=amount_minor
        )
        return self.add(
            DeductionSucceeded, loan, at_ms,
            postings=(posting(f"channel:{channel}:clearing", f"loan:{loan}:principal",
            amount_minor),), attempt_id=attempt, order_id=attempt, channel=channel,
            channel_reference="ref", amount_minor=amount_minor, allocations=(allocation,),
            excess_minor=0,
        )  # fmt: skip

    def failed(self, loan: str, attempt: str, code: str, at_ms: int) -> None:
        self.add(DeductionFailed, loan, at_ms, attempt_id=attempt, code=code, retriable=False)

    def reversed(self, loan: str, success: Event, at_ms: int) -> None:
        assert isinstance(success, DeductionSucceeded)
        mirrored = tuple(posting(p.credit, p.debit, p.amount_minor) for p in success.postings)
        self.add(
            DeductionReversed, loan, at_ms, postings=mirrored, attempt_id=success.attempt_id,
            reverses_event_id=success.event_id, allocations=success.allocations, excess_minor=0,
        )  # fmt: skip


def test_an_empty_log_has_no_figures() -> None:
    report = build_report([])

    assert report.events == 0
    assert report.first_timestamp_ms is None
    assert report.headline == Headline(0, 0, 0, 0, 0, 0, 0, 0)
    assert report.headline.success_rate_bps is None
    assert report.channels == ()
    assert report.collections.dates == ()
    assert report.outstanding.dates == ()
    assert report.settlement.percentiles_ms == {}


def test_collections_are_dated_by_the_attempt_and_reversals_by_the_day_they_were_recorded() -> None:
    log = Log()
    log.opened("L1", 1_000_000)
    log.closed("L1", DAY1)
    log.started("L1", "a1", "alpha", 30_000, DAY1, at_ms=1_000)
    log.closed("L1", DAY2)  # the success arrives after the next close: still DAY1's money
    first = log.succeeded("L1", "a1", "alpha", 30_000, at_ms=3_000)
    log.started("L1", "a2", "beta", 20_000, DAY2, at_ms=4_000)
    log.succeeded("L1", "a2", "beta", 20_000, at_ms=5_000)
    log.reversed("L1", first, at_ms=6_000)

    report = build_report(log.records)

    assert report.collections.dates == (DAY1, DAY2)
    assert report.collections.collected_minor == {"alpha": (30_000, 0), "beta": (0, 20_000)}
    assert report.collections.reversed_minor == {"alpha": (0, 30_000), "beta": (0, 0)}
    assert report.headline.collected_minor == 50_000
    assert report.headline.reversed_minor == 30_000


def test_outstanding_is_the_running_receivables_by_each_loans_business_date() -> None:
    log = Log()
    log.opened("L1", 1_000_000)  # before L1's first close: counts on that first date, DAY1
    log.opened("L2", 500_000)  # L2's first close is DAY2
    log.opened("L3", 200_000)  # never closed: counts on the latest date of all, DAY2
    log.closed("L1", DAY1)
    log.add(
        InstallmentFellDue, "L1", 0, postings=(posting("loan:L1:interest", "income:interest",
        10_000),), installment=1, interest_recognised_minor=10_000, fee_recognised_minor=0,
    )  # fmt: skip
    log.started("L1", "a1", "alpha", 100_000, DAY1, at_ms=0)
    log.succeeded("L1", "a1", "alpha", 100_000, at_ms=0)
    log.closed("L2", DAY2)

    report = build_report(log.records)

    assert report.outstanding.dates == (DAY1, DAY2)
    assert report.outstanding.by_component_minor == {
        "principal": (900_000, 1_600_000),
        "interest": (10_000, 10_000),
        "fee": (0, 0),
    }
    assert report.headline.outstanding_minor == 1_610_000
    assert report.headline.loans == 3


def test_before_any_close_outstanding_is_dated_by_when_the_loans_opened() -> None:
    log = Log()
    log.opened("L1", 1_000_000)

    report = build_report(log.records)

    assert report.outstanding.dates == (OPENED_AT.date(),)
    assert report.headline.outstanding_minor == 1_000_000


def test_outcomes_count_each_attempt_once_by_its_final_state() -> None:
    log = Log()
    log.opened("L1", 1_000_000)
    log.started("L1", "a1", "alpha", 100, DAY1, at_ms=0)
    log.failed("L1", "a1", "insufficient_funds", at_ms=1)
    log.started("L1", "a2", "beta", 100, DAY1, at_ms=2)
    log.add(DeductionOutcomeUnknown, "L1", 3, attempt_id="a2", detail="timeout")
    log.failed("L1", "a2", "card_blocked", at_ms=4)
    log.started("L1", "a3", "alpha", 100, DAY1, at_ms=5)
    success = log.succeeded("L1", "a3", "alpha", 100, at_ms=6)
    log.reversed("L1", success, at_ms=7)
    log.started("L1", "a4", "alpha", 100, DAY1, at_ms=8)
    log.add(DeductionOutcomeUnknown, "L1", 9, attempt_id="a4", detail="error")

    report = build_report(log.records)

    alpha, beta = report.outcomes
    assert (alpha.channel, alpha.succeeded, alpha.reversed, alpha.in_flight) == ("alpha", 0, 1, 1)
    assert alpha.failed_by_code == {"insufficient_funds": 1}
    assert (beta.succeeded, beta.failed_by_code, beta.in_flight) == (0, {"card_blocked": 1}, 0)
    alpha_row, beta_row = report.channels
    assert (alpha_row.attempts, alpha_row.succeeded, alpha_row.failed) == (3, 1, 1)
    assert (alpha_row.unknowns_resolved, beta_row.unknowns_resolved) == (0, 1)
    assert (report.headline.attempts, report.headline.decided, report.headline.succeeded) == (
        4,
        3,
        1,
    )
    assert report.headline.success_rate_bps == 3333


def test_settlement_times_run_from_the_start_record_to_the_success_record() -> None:
    log = Log()
    log.opened("L1", 1_000_000)
    for n, seconds in enumerate((4, 1, 2, 3)):
        log.started("L1", f"a{n}", "alpha", 100, DAY1, at_ms=10_000 * n)
        log.succeeded("L1", f"a{n}", "alpha", 100, at_ms=10_000 * n + 1_000 * seconds)

    report = build_report(log.records)

    assert report.settlement.durations_ms == (1_000, 2_000, 3_000, 4_000)
    assert (report.first_timestamp_ms, report.last_timestamp_ms) == (0, 33_000)
    assert report.settlement.percentiles_ms == {50: 2_000, 90: 4_000, 99: 4_000}


@pytest.mark.parametrize(
    ("values", "percentile", "expected"),
    [((7,), 99, 7), ((1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 50, 5), (tuple(range(1, 101)), 99, 99)],
)
def test_percentiles_are_nearest_rank(
    values: tuple[int, ...], percentile: int, expected: int
) -> None:
    assert nearest_rank(values, percentile) == expected
    assert settlement(reversed(values)).durations_ms == values


def test_a_repeated_event_is_counted_once() -> None:
    log = Log()
    log.opened("L1", 1_000_000)
    log.started("L1", "a1", "alpha", 500, DAY1, at_ms=0)
    log.succeeded("L1", "a1", "alpha", 500, at_ms=10)
    log.records.append(log.records[-1])  # a crash under at-least-once wrote it twice

    report = build_report(log.records)

    assert (report.events, report.repeats_skipped) == (3, 1)
    assert report.headline.collected_minor == 500
    assert report.settlement.durations_ms == (10,)


def test_refunds_count_only_when_the_channel_confirms_them() -> None:
    log = Log()
    log.opened("L1", 1_000_000)
    for refund, channel in (("r1", "alpha"), ("r2", "beta")):
        log.add(
            RefundStarted, "L1", 0, refund_id=refund, channel=channel, order_id=f"o-{refund}",
            amount_minor=700, debit_account_ref="B1",
        )  # fmt: skip
    log.add(RefundSucceeded, "L1", 0, refund_id="r1", channel_reference="ref")
    log.add(RefundFailed, "L1", 0, refund_id="r2", code="closed_account")

    report = build_report(log.records)

    assert report.headline.refunded_minor == 700


@pytest.mark.parametrize(
    ("minor", "text"),
    [(0, "¥0.00"), (5, "¥0.05"), (123_456_789, "¥1,234,567.89"), (-100_050, "-¥1,000.50")],
)
def test_yuan_have_thousands_separators(minor: int, text: str) -> None:
    assert format_yuan(minor) == text


def test_the_figures_agree_with_the_decider_on_a_real_history() -> None:
    state, events = history(open_loan(), close_day(DAY1), request("pay-1"))
    attempt = state.in_flight
    assert attempt is not None
    paid = when(state, success_command("ok", attempt.attempt_id, attempt.amount_minor))
    log = [*events, *paid.events]
    balances: dict[str, int] = defaultdict(int)
    for event in log:
        for p in event.postings:
            balances[p.debit] += p.amount_minor
            balances[p.credit] -= p.amount_minor

    report = build_report((event, 0) for event in log)

    assert report.headline.collected_minor == attempt.amount_minor
    assert report.headline.outstanding_minor == sum(balances[a] for a in receivables(LOAN))
    assert report.collections.dates == (DAY1,)
    assert report.headline.success_rate_bps == 10_000


@pytest.mark.parametrize(
    ("milliseconds", "text"),
    [(0, "0 ms"), (850, "850 ms"), (1_894, "1.9 s"), (270_000, "4.5 min"), (7_200_000, "2.0 h")],
)
def test_durations_read_in_the_largest_sensible_unit(milliseconds: int, text: str) -> None:
    assert format_duration(milliseconds) == text
