"""The business clock: a year of business days for a book of loans, closed two ways.

The issue's loans (12,000.00 CNY over 12 months), half of them paid on each due date (an app
request and the channel's success), half never paid. Their year of business days is closed
- one `CloseBusinessDay` per loan and day (the contract before the clock), or
- one `CloseBusinessDayForPartition` a day (`ledger.business_clock`): the due calendar picks the
  loans the day does something to, the others catch up before their next command.
Measured in this process with no broker, on the same loans in the same run: the events a loan
writes in the year, and the core's time (deciding and folding) per business day.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time

from ledger import DEFAULT_POLICY, LoanState, decide, initial_state
from ledger.business_clock import (
    BusinessClock,
    DueCalendar,
    advanced,
    close_for,
    decide_in_partition,
    next_close,
)
from schemas.commands import (
    CloseBusinessDay,
    CloseBusinessDayForPartition,
    Command,
    OpenLoan,
    RepaymentMethod,
    ReportChannelSuccess,
    RequestRepayment,
    Source,
)
from streams.dev.bench.context import Bench
from streams.dev.bench.results import Figure, Goal, Report, ratio

SECTION = "clock"
OPENED = date(2026, 1, 1)
DAYS = 365


@dataclass
class Year:
    events: int
    core_s: float


def run(bench: Bench, report: Report) -> None:
    loans = bench.sizes.core_loans
    daily, ticked = closed_daily(loans), closed_by_ticks(loans)
    per_loan = ticked.events / loans
    report.add(
        Figure(SECTION, "events per loan-year, a close per loan and day", daily.events / loans,
               "events", note=f"{loans} loans, half paid on each due date")
    )  # fmt: skip
    report.add(
        Figure(SECTION, "events per loan-year, one tick per partition and day", per_loan,
               "events", ratio(ticked.events, daily.events), "a close per loan and day",
               Goal("grows with what happens: <= 0.25x", at_most=0.25, of_ratio=True))
    )  # fmt: skip
    scale = 100_000 / loans / DAYS
    per_day = "core time per business day and 100,000 loans"
    both = "closes and the day's payments"
    report.add(
        Figure(SECTION, f"{per_day}, a close per loan", daily.core_s * scale, "s", note=both)
    )  # fmt: skip
    report.add(
        Figure(SECTION, f"{per_day}, ticks", ticked.core_s * scale, "s",
               ratio(ticked.core_s, daily.core_s), "a close per loan and day", note=both)
    )  # fmt: skip
    report.details[SECTION] = {
        "loans": loans,
        "days": DAYS,
        "events_daily": daily.events,
        "events_ticks": ticked.events,
        "core_s_daily": daily.core_s,
        "core_s_ticks": ticked.core_s,
    }


def closed_daily(loans: int) -> Year:
    states = {loan_id: _opened(loan_id) for loan_id in _loan_ids(loans)}
    events, started = 0, time.perf_counter()
    for day in _year():
        for loan_id, state in states.items():
            close = CloseBusinessDay(
                command_id=f"close-{day.isoformat()}", loan_id=loan_id, issued_at=_at(day),
                business_date=day,
            )  # fmt: skip
            decision = decide(state, close)
            events += len(decision.events)
            states[loan_id] = state = decision.state
            if _pays(loan_id) and _due_today(state, day):
                events, states[loan_id] = _pay(state, day, None, events)
    return Year(events, time.perf_counter() - started)


def closed_by_ticks(loans: int) -> Year:
    states = {loan_id: _opened(loan_id) for loan_id in _loan_ids(loans)}
    calendar = DueCalendar()
    for loan_id, state in states.items():
        calendar.plan(loan_id, next_close(state, DEFAULT_POLICY))
    events, started = 0, time.perf_counter()
    for day in _year():
        tick = CloseBusinessDayForPartition(
            command_id=f"business-day:{day.isoformat()}:p0", issued_at=_at(day), partition=0,
            business_date=day,
        )  # fmt: skip
        clock = advanced(tick)
        for loan_id in calendar.due(day):
            decision = close_for(states[loan_id], clock, DEFAULT_POLICY)
            assert decision is not None, f"{loan_id} was due on {day} and already closed"
            events += len(decision.events)
            states[loan_id] = state = decision.state
            if _pays(loan_id) and _due_today(state, day):
                events, state = _pay(state, day, clock, events)
                states[loan_id] = state
            calendar.plan(loan_id, next_close(state, DEFAULT_POLICY))
    return Year(events, time.perf_counter() - started)


def _pay(
    state: LoanState, day: date, clock: BusinessClock | None, events: int
) -> tuple[int, LoanState]:
    request = RequestRepayment(
        command_id=f"pay-{day.isoformat()}", loan_id=state.loan_id, issued_at=_at(day, 10),
        source=Source.APP, requested_by="app",
    )  # fmt: skip
    decision = decide_in_partition(state, request, clock, DEFAULT_POLICY)
    attempt = decision.state.in_flight
    assert attempt is not None, f"{state.loan_id}: the request on {day} was refused"
    answer: Command = ReportChannelSuccess(
        command_id=f"gw:{attempt.attempt_id}:ok", loan_id=state.loan_id, issued_at=_at(day, 11),
        attempt_id=attempt.attempt_id, channel_reference="ch", amount_minor=attempt.amount_minor,
    )  # fmt: skip
    settled = decide_in_partition(decision.state, answer, clock, DEFAULT_POLICY)
    return events + len(decision.events) + len(settled.events), settled.state


def _opened(loan_id: str) -> LoanState:
    command = OpenLoan(
        command_id=f"open-{loan_id}", loan_id=loan_id, issued_at=_at(OPENED), borrower_id="B",
        principal_minor=1_200_000, currency="CNY", annual_rate_bps=1200, term_months=12,
        repayment_method=RepaymentMethod.EQUAL_INSTALLMENT, first_due_date=date(2026, 2, 1),
    )  # fmt: skip
    return decide(initial_state(loan_id), command).state


def _due_today(state: LoanState, day: date) -> bool:
    return any(row.due_date == day and row.owed_minor for row in state.installments)


def _pays(loan_id: str) -> bool:
    return int(loan_id.rsplit("-", 1)[1]) % 2 == 0


def _loan_ids(loans: int) -> list[str]:
    return [f"clock-{number:06d}" for number in range(loans)]


def _year() -> list[date]:
    return [OPENED + timedelta(days=offset) for offset in range(1, DAYS + 1)]


def _at(day: date, hour: int = 23) -> datetime:
    return datetime.combine(day, clock_time(hour), tzinfo=UTC)
