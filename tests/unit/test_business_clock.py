"""The business clock: one tick per partition and day, instead of one CloseBusinessDay per loan.

Given loans and a calendar of repayments, when the days are closed by ticks (the due calendar
picks the loans, the others catch up before their next command), then every loan gets the same
events as when each loan's every day is closed by its own CloseBusinessDay, minus the
BusinessDayClosed of the days nothing happened to it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import DEFAULT_POLICY, LoanState, Policy, decide, initial_state
from ledger.business_clock import (
    BusinessClock,
    DueCalendar,
    advanced,
    close_for,
    decide_in_partition,
    next_close,
    share,
    tick_verdict,
)
from ledger.snapshot import decode_clock, encode_clock
from schemas.commands import CloseBusinessDayForPartition, Command, RepaymentMethod, Source
from schemas.events import BusinessDayClosed, DeductionStarted, Event, encode_event
from schemas.outcomes import OutcomeStatus, RejectionReason
from tests.support.builders import close_day, failure, open_loan, request, success

START = date(2026, 1, 1)
NOT_COMPARED = {"event_id", "seq", "causation_id", "causation_hash", "occurred_at"}


def tick(business_date: date, command_id: str | None = None) -> CloseBusinessDayForPartition:
    return CloseBusinessDayForPartition(
        command_id=command_id or f"business-day:{business_date.isoformat()}:p0",
        issued_at=datetime.combine(business_date, datetime.min.time(), tzinfo=UTC)
        + timedelta(hours=23),
        partition=0,
        business_date=business_date,
    )


# ---- the tick rule --------------------------------------------------------------------------

DAY = date(2026, 3, 1)
LAST = advanced(tick(DAY))
TICK_RULE = [
    # (the partition's clock, the tick, its verdict)
    (None, tick(DAY), (OutcomeStatus.ACCEPTED, None)),
    (LAST, tick(DAY + timedelta(days=1)), (OutcomeStatus.ACCEPTED, None)),
    (LAST, tick(DAY), (OutcomeStatus.DUPLICATE, None)),
    (
        LAST,
        tick(DAY + timedelta(days=1), command_id=LAST.command_id),
        (OutcomeStatus.REJECTED, RejectionReason.IDEMPOTENCY_CONFLICT),
    ),
    (
        LAST,
        tick(DAY, command_id="another"),
        (OutcomeStatus.REJECTED, RejectionReason.STALE_BUSINESS_DATE),
    ),
    (
        LAST,
        tick(DAY - timedelta(days=3)),  # an older tick's repeat is stale, not a duplicate
        (OutcomeStatus.REJECTED, RejectionReason.STALE_BUSINESS_DATE),
    ),
    (LAST, tick(DAY + timedelta(days=31)), (OutcomeStatus.ACCEPTED, None)),  # max_days_ahead
    (
        LAST,
        tick(DAY + timedelta(days=32)),
        (OutcomeStatus.REJECTED, RejectionReason.BUSINESS_DATE_TOO_FAR_AHEAD),
    ),
    (None, tick(date(2099, 12, 31)), (OutcomeStatus.ACCEPTED, None)),  # nothing to compare with
    # Near the last date there is: `clock + max_days_ahead` would overflow (it raised, and the
    # tick outside any loan's decision crash-looped its partition).
    (advanced(tick(date(9999, 12, 15))), tick(date(9999, 12, 16)), (OutcomeStatus.ACCEPTED, None)),
]


def test_the_tick_rule() -> None:
    for clock, command, verdict in TICK_RULE:
        assert tick_verdict(clock, command, DEFAULT_POLICY) == verdict, (clock, command)


def test_a_clock_read_back_from_its_snapshot_closes_a_day_into_the_same_bytes() -> None:
    """A restored clock (decoded by msgspec) and the live one (built from the pydantic tick)
    must stamp the same events: under at_least_once a command decided again after a restore
    must give the bytes the first decision wrote."""
    state = _given(open_loan())
    restored = decode_clock(encode_clock(LAST, events_from=1, command_offset=2))
    assert restored is not None
    live, again = (
        close_for(state, LAST, DEFAULT_POLICY),
        close_for(state, restored.clock, DEFAULT_POLICY),
    )
    assert live is not None
    assert again is not None
    assert [encode_event(e) for e in live.events] == [encode_event(e) for e in again.events]


# ---- what a loan gets -----------------------------------------------------------------------


def test_a_loan_with_nothing_due_writes_nothing_until_its_next_command() -> None:
    state = _given(open_loan())  # first due 2026-02-01
    calendar = DueCalendar()
    calendar.plan(state.loan_id, next_close(state, DEFAULT_POLICY))
    clock = advanced(tick(date(2026, 1, 10)))
    assert calendar.due(clock.business_date) == []
    repay = request("app-1")
    decision = decide_in_partition(state, repay, clock, DEFAULT_POLICY)
    assert [type(e) for e in decision.events][:1] == [BusinessDayClosed]
    assert decision.events[0].business_date == date(2026, 1, 10)  # type: ignore[union-attr]
    assert decision.events[0].causation_id == clock.command_id
    assert decision.outcome == decide(_after(state, decision.events[:1]), repay).outcome


def test_a_repeat_is_decided_as_it_stands_with_no_catching_up() -> None:
    state = _given(open_loan(), request("app-1"))
    clock = advanced(tick(date(2026, 1, 10)))
    repeat = decide_in_partition(state, request("app-1"), clock, DEFAULT_POLICY)
    assert repeat.events == ()
    assert repeat.outcome == decide(state, request("app-1")).outcome


def test_a_loans_own_close_as_late_as_the_partitions_does_the_catching_up() -> None:
    state = _given(open_loan())
    clock = advanced(tick(date(2026, 2, 1)))
    decision = decide_in_partition(state, close_day(date(2026, 2, 1)), clock, DEFAULT_POLICY)
    closes = [e for e in decision.events if isinstance(e, BusinessDayClosed)]
    assert [close.causation_id for close in closes] == ["close-2026-02-01"]


@settings(max_examples=60, deadline=None)
@given(
    st.data(),
    st.integers(min_value=1, max_value=24),
    st.integers(min_value=0, max_value=60),
    st.sampled_from([Policy(), Policy(grace_days=0), Policy(late_fee_min_minor=0, late_fee_bps=0)]),
)
def test_next_close_is_the_first_day_a_close_does_something(
    data: st.DataObject, term: int, first_due_in: int, policy: Policy
) -> None:
    """Against the close itself: on every day before `next_close` a close writes only its
    BusinessDayClosed; on `next_close` it writes more."""
    first_due = START + timedelta(days=first_due_in)
    state = _given(open_loan(term_months=term, first_due_date=first_due), policy=policy)
    day = START
    for _ in range(data.draw(st.integers(min_value=1, max_value=6))):
        soonest = next_close(state, policy)
        if soonest is None:
            break
        for quiet in _days(day + timedelta(days=1), soonest):
            assert _close_writes(state, quiet, policy) == [BusinessDayClosed], quiet
        assert len(_close_writes(state, soonest, policy)) > 1, soonest
        state = _after(state, decide(state, close_day(soonest), policy).events)
        day = soonest
        # Pay something, sometimes; or leave a debit in flight over the next closes, or fail it
        # (issue 16, 4: no late fee falls on an installment a debit in flight is paying).
        action = data.draw(st.sampled_from(["nothing", "pay", "start", "fail"]))
        state = _act(state, action, f"{action}-{day.isoformat()}", policy)


# ---- ticks against one close per loan and day -----------------------------------------------

Plan = dict[int, list[str]]  # day number -> loans repaid that day


@settings(max_examples=15, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 18),
            st.integers(0, 40),
            st.sampled_from(list(RepaymentMethod)),
        ),
        min_size=1,
        max_size=4,
    ),
    st.sets(st.tuples(st.integers(0, 3), st.integers(0, 420)), max_size=20),
)
def test_ticks_give_each_loan_the_events_of_a_close_per_loan_and_day(
    loans: list[tuple[int, int, str]], repayments: set[tuple[int, int]]
) -> None:
    opens = [
        open_loan(f"open-{n}", loan_id=f"L{n}", term_months=term,
                  first_due_date=START + timedelta(days=due_in), repayment_method=method)
        for n, (term, due_in, method) in enumerate(loans)
    ]  # fmt: skip
    plan: Plan = {}
    for loan, day in sorted(repayments):
        if loan < len(opens):
            plan.setdefault(day, []).append(f"L{loan}")
    daily = _closing_every_loan_every_day(opens, plan)
    ticked = _closing_by_ticks(opens, plan)
    for loan_id in daily:
        quiet = [e for e in daily[loan_id] if not isinstance(e, BusinessDayClosed)]
        assert _compared(quiet) == _compared(
            [e for e in ticked[loan_id] if not isinstance(e, BusinessDayClosed)]
        ), loan_id
        assert len(ticked[loan_id]) <= len(daily[loan_id])
    assert sum(map(len, ticked.values())) < sum(map(len, daily.values())) // 4


def _closing_every_loan_every_day(opens: list[Any], plan: Plan) -> dict[str, list[Event]]:
    states = {o.loan_id: _given(o) for o in opens}
    written: dict[str, list[Event]] = {loan_id: [] for loan_id in states}
    for number, day in enumerate(_days(START, START + timedelta(days=430))):
        for loan_id, state in states.items():
            states[loan_id] = _record(written[loan_id], state, close_day(day, loan_id=loan_id))
        for loan_id in plan.get(number, []):
            states[loan_id] = _repay(written[loan_id], states[loan_id], day)
    return written


def _closing_by_ticks(opens: list[Any], plan: Plan) -> dict[str, list[Event]]:
    states = {o.loan_id: _given(o) for o in opens}
    written: dict[str, list[Event]] = {loan_id: [] for loan_id in states}
    calendar = DueCalendar()
    for loan_id, state in states.items():
        calendar.plan(loan_id, next_close(state, DEFAULT_POLICY))
    clock: BusinessClock | None = None
    for number, day in enumerate(_days(START, START + timedelta(days=430))):
        clock = advanced(tick(day))
        for loan_id in calendar.due(day):
            decision = close_for(states[loan_id], clock, DEFAULT_POLICY)
            assert decision is not None
            written[loan_id].extend(decision.events)
            states[loan_id] = decision.state
            calendar.plan(loan_id, next_close(decision.state, DEFAULT_POLICY))
        for loan_id in plan.get(number, []):
            states[loan_id] = _repay(written[loan_id], states[loan_id], day, clock)
            calendar.plan(loan_id, next_close(states[loan_id], DEFAULT_POLICY))
    return written


def _repay(
    written: list[Event], state: LoanState, day: date, clock: BusinessClock | None = None
) -> LoanState:
    """An app request, and the channel's success for what it asked, if it was accepted."""
    state = _record(written, state, request(f"pay-{day.isoformat()}", loan_id=state.loan_id), clock)
    attempt = state.in_flight
    if attempt is None:
        return state
    answer = success(
        f"ok-{day.isoformat()}", attempt.attempt_id, attempt.amount_minor, loan_id=state.loan_id
    )
    return _record(written, state, answer, clock)


def _record(
    written: list[Event], state: LoanState, command: Command, clock: BusinessClock | None = None
) -> LoanState:
    decision = decide_in_partition(state, command, clock, DEFAULT_POLICY)
    written.extend(decision.events)
    return decision.state


def _compared(events: Sequence[Event]) -> list[dict[str, Any]]:
    return [event.model_dump(mode="json", exclude=NOT_COMPARED) for event in events]


# ---- helpers --------------------------------------------------------------------------------


def _given(*commands: Command, policy: Policy = DEFAULT_POLICY) -> LoanState:
    state = initial_state(commands[0].loan_id)
    for command in commands:
        state = decide(state, command, policy).state
    return state


def _after(state: LoanState, events: tuple[Event, ...]) -> LoanState:
    from ledger import evolve

    for event in events:
        state = evolve(state, event)
    return state


def _close_writes(state: LoanState, day: date, policy: Policy) -> list[type[Event]]:
    return [type(e) for e in decide(state, close_day(day), policy).events]


def _act(state: LoanState, action: str, command_id: str, policy: Policy) -> LoanState:
    in_flight = state.in_flight
    if action == "pay" and in_flight is not None:
        paid = success(command_id, in_flight.attempt_id, in_flight.amount_minor)
        return decide(state, paid, policy).state
    if action == "pay":
        return _paid(state, command_id, policy)
    if action == "start":
        return decide(state, request(command_id, Source.APP, loan_id=state.loan_id), policy).state
    if action == "fail" and in_flight is not None:
        failed = failure(command_id, in_flight.attempt_id, "no_funds", False, state.loan_id)
        return decide(state, failed, policy).state
    return state


def _paid(state: LoanState, command_id: str, policy: Policy) -> LoanState:
    decision = decide(state, request(command_id, Source.APP, loan_id=state.loan_id), policy)
    started = [e for e in decision.events if isinstance(e, DeductionStarted)]
    state = decision.state
    if not started:
        return state
    answer = success(f"{command_id}-ok", started[0].attempt_id, started[0].amount_minor)
    return decide(state, answer, policy).state


def _days(first: date, stop: date) -> Iterator[date]:
    day = first
    while day < stop:
        yield day
        day += timedelta(days=1)


def test_share_is_a_close_business_day_with_the_ticks_identity() -> None:
    command = share(LAST, "L9")
    assert (command.command_id, command.loan_id, command.business_date) == (
        LAST.command_id, "L9", LAST.business_date,
    )  # fmt: skip
