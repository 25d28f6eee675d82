"""The pure core at a loan's age: what `decide` costs and what a loan's state weighs, over years.

A loan of 48 monthly installments lives through its business days one `CloseBusinessDay` a day
and pays each installment the day it falls due (request, then the channel's success), as a
punctual borrower does. Measured in this process, with no broker:
- `decide` of the next day's `CloseBusinessDay` on the loan at 1 day and at 3 years of age (the
  median of many timed calls on the same state; deciding never changes its input);
- the memory one-year loan states hold (the issue's loan: 12,000.00 CNY over 12 months, a year of
  business days; tracemalloc over `loans` of them), and the size of one loan's snapshot
  (`ledger.snapshot`) as the decider writes it; a paid-off loan is kept packed (its snapshot,
  compressed: `streams.worker.snapshots.Resting`).
"""

from __future__ import annotations

import statistics
import time
import tracemalloc
import zlib
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock

from ledger import LoanState, decide, initial_state
from ledger.snapshot import encode_snapshot
from schemas.commands import (
    CloseBusinessDay,
    Command,
    OpenLoan,
    RepaymentMethod,
    ReportChannelSuccess,
    RequestRepayment,
    Source,
)
from schemas.events import Event
from streams.dev.bench.context import Bench
from streams.dev.bench.results import Figure, Goal, Report, ratio

SECTION = "core"
OPENED = date(2026, 1, 1)
TERM_MONTHS = 48
TIMED_CALLS = 3_000


class PunctualLoan:
    """One loan decided day by day; `state` is where its events have taken it."""

    def __init__(
        self, loan_id: str, term_months: int = TERM_MONTHS, keep_events: bool = False
    ) -> None:
        self.loan_id = loan_id
        self.state: LoanState = initial_state(loan_id)
        self.events: list[Event] | None = [] if keep_events else None
        self.day = OPENED
        self._keep(
            OpenLoan(
                command_id=f"open-{loan_id}",
                loan_id=loan_id,
                issued_at=_at(OPENED),
                borrower_id=f"B-{loan_id}",
                principal_minor=1_200_000,
                currency="CNY",
                annual_rate_bps=1200,
                term_months=term_months,
                repayment_method=RepaymentMethod.EQUAL_INSTALLMENT,
                first_due_date=date(2026, 2, 1),
            )
        )

    def next_close(self) -> CloseBusinessDay:
        day = self.day + timedelta(days=1)
        return CloseBusinessDay(
            command_id=f"close-{self.loan_id}-{day.isoformat()}",
            loan_id=self.loan_id,
            issued_at=_at(day),
            business_date=day,
        )

    def live(self, days: int, pays: bool = True) -> None:
        for _ in range(days):
            close = self.next_close()
            self.day = close.business_date
            self._keep(close)
            if pays and any(row.fell_due and row.owed_minor for row in self.state.installments):
                self._pay()

    def _pay(self) -> None:
        request = RequestRepayment(
            command_id=f"pay-{self.loan_id}-{self.day.isoformat()}",
            loan_id=self.loan_id,
            issued_at=_at(self.day, hour=10),
            source=Source.AUTO_DEBIT,
            requested_by="scheduler",
        )
        self._keep(request)
        attempt = self.state.in_flight
        assert attempt is not None, f"{self.loan_id}: the request on {self.day} was refused"
        self._keep(
            ReportChannelSuccess(
                command_id=f"gw:{attempt.attempt_id}:ok",
                loan_id=self.loan_id,
                issued_at=_at(self.day, hour=11),
                attempt_id=attempt.attempt_id,
                channel_reference=f"ch-{attempt.attempt_id[:12]}",
                amount_minor=attempt.amount_minor,
            )
        )

    def _keep(self, command: Command) -> None:
        decision = decide(self.state, command)
        assert decision.outcome.status.value == "accepted", decision.outcome
        self.state = decision.state
        if self.events is not None:
            self.events.extend(decision.events)


def _at(day: date, hour: int = 23) -> datetime:
    return datetime.combine(day, clock(hour), tzinfo=UTC)


def decide_cost_us(loan: PunctualLoan, calls: int = TIMED_CALLS) -> float:
    """The median cost of deciding the loan's next business day, in microseconds."""
    command, state = loan.next_close(), loan.state
    timings = []
    for _ in range(calls):
        started = time.perf_counter()
        decide(state, command)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1e6


def memory_per_loan_kib(loans: int, days: int, term_months: int, pays: bool) -> tuple[float, int]:
    """What the states of `loans` loans of `days` days hold, per loan (KiB), and one loan's
    snapshot size in bytes."""
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    kept = []
    for number in range(loans):
        loan = PunctualLoan(f"mem-{number:06d}", term_months=term_months)
        loan.live(days, pays)
        kept.append(loan.state)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return grown / loans / 1024, len(encode_snapshot(kept[0], events_from=0))


def run(bench: Bench, report: Report) -> None:
    young = PunctualLoan("age-young")
    young.live(1)
    old = PunctualLoan("age-old")
    old.live(3 * 365 + 5)  # the day after is not a due date, as for the young loan
    day_one, three_years = decide_cost_us(young), decide_cost_us(old)
    worse = ratio(three_years, day_one)
    report.add(Figure(SECTION, "decide CloseBusinessDay, loan 1 day old", day_one, "us"))
    report.add(
        Figure(
            SECTION, "decide CloseBusinessDay, loan 3 years old", three_years, "us", worse,
            "1 day old", Goal("<= 1.1x the 1-day cost", at_most=1.1, of_ratio=True),
        )
    )  # fmt: skip
    loans = bench.sizes.core_loans
    # The loan (12 months, a year of business days, never paid), then a punctual
    # borrower of a 24-month loan after a year: twelve settled attempts in its state.
    per_loan, snapshot_bytes = memory_per_loan_kib(loans, 365, term_months=12, pays=False)
    report.add(
        Figure(
            SECTION, "memory per one-year loan state (12 months, unpaid)", per_loan, "KiB",
            goal=Goal("<= 16 KiB", at_most=16), note=f"tracemalloc over {loans} loans",
        )
    )  # fmt: skip
    punctual, punctual_bytes = memory_per_loan_kib(loans, 365, term_months=24, pays=True)
    report.add(
        Figure(
            SECTION, "memory per one-year loan state (24 months, 12 paid)", punctual, "KiB",
            goal=Goal("<= 16 KiB", at_most=16), note=f"snapshot {punctual_bytes} bytes",
        )
    )  # fmt: skip
    report.add(Figure(SECTION, "snapshot of a one-year loan", snapshot_bytes, "bytes"))
    paid = PunctualLoan("at-rest", term_months=12)
    paid.live(370)  # the twelfth installment paid on day 365
    assert paid.state.at_rest, "a punctual 12-month loan is paid off within the year"
    packed = len(zlib.compress(encode_snapshot(paid.state, events_from=0), 1))
    report.add(
        Figure(
            SECTION, "a paid-off loan at rest, packed in memory", packed / 1024, "KiB",
            goal=Goal("<= 16 KiB", at_most=16), note="its snapshot, zlib level 1",
        )
    )  # fmt: skip
    report.details[SECTION] = {
        "decide_us_1_day": day_one,
        "decide_us_3_years": three_years,
        "memory_kib_per_one_year_loan": per_loan,
        "memory_kib_per_one_year_punctual_loan": punctual,
        "packed_kib_per_loan_at_rest": packed / 1024,
        "snapshot_bytes_one_year_loan": snapshot_bytes,
        "loans": loans,
    }
