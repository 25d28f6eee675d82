"""`ledger history`'s pure part: events -> timeline rows, attempts, refunds and balances."""

from __future__ import annotations

from datetime import date
from typing import get_args

import pytest

from ledger import LoanState, decide, evolve, initial_state
from ledger.balances import fold_balances
from ledger.state import AttemptStatus, RefundStatus
from ledger.timeline import (
    format_minor,
    history_json,
    loan_history,
    money,
    short_id,
)
from schemas.commands import Command, Source
from schemas.events import Event
from schemas.outcomes import OutcomeStatus
from tests.support.builders import (
    LOAN,
    close_day,
    discrepancy,
    duplicate_debit,
    failure,
    in_flight_id,
    order_not_found,
    outcome_unknown,
    processing,
    refund_failure,
    refund_success,
    request,
    reversal,
    small_loan,
    stuck,
    submitted,
    success,
)


class Scenario:
    """Decides commands one after another, keeping every event, as the decider would."""

    def __init__(self) -> None:
        self.state: LoanState = initial_state(LOAN)
        self.events: list[Event] = []

    def run(self, *commands: Command, expect: OutcomeStatus = OutcomeStatus.ACCEPTED) -> Scenario:
        for command in commands:
            decision = decide(self.state, command)
            assert decision.outcome.status is expect, decision.outcome
            for event in decision.events:
                self.state = evolve(self.state, event)
                self.events.append(event)
        return self


def a_busy_loan() -> Scenario:
    """Opened, due, one attempt that wobbles then succeeds and is debited twice (refunded), and
    an early payment that fails."""
    scenario = Scenario().run(small_loan(), close_day(date(2026, 2, 1)), request("req-1"))
    first = in_flight_id(scenario.state)
    scenario.run(
        submitted("sub-1", first),
        processing("proc-1", first),
        outcome_unknown("unknown-1", first),
        order_not_found("gone-1", first),
        success("ok-1", first, 103_500),
        duplicate_debit("dup-1", first, 103_500),
    )
    scenario.run(refund_success("refund-ok-1", scenario.state.refunds[-1].refund_id))
    scenario.run(request("req-2", Source.COLLECTION, installments=(2,)))
    return scenario.run(
        failure("fail-2", in_flight_id(scenario.state), "insufficient_funds", False)
    )


def a_troubled_loan() -> Scenario:
    """A success flagged stuck first and later reversed, a late fee, a success missing from the
    statement and debited twice, a refund that fails, and an installment paid early by a
    success that names more than its attempt asked for."""
    scenario = Scenario().run(small_loan(), close_day(date(2026, 2, 1)), request("req-1"))
    first = in_flight_id(scenario.state)
    scenario.run(
        stuck("stuck-1", first),
        success("ok-1", first, 103_500),
        reversal("rev-1", first),
        close_day(date(2026, 2, 5)),
        request("req-2"),
    )
    second, owed = in_flight_id(scenario.state), scenario.state.installments[0].owed_minor
    scenario.run(
        success("ok-2", second, owed),
        discrepancy("disc-2", second),
        duplicate_debit("dup-2", second, 1_000),
    )
    scenario.run(refund_failure("refund-bad-2", scenario.state.refunds[-1].refund_id))
    scenario.run(request("req-3", installments=(2,)))
    scenario.run(request("req-4", installments=(2,)), expect=OutcomeStatus.REJECTED)
    return scenario.run(success("ok-3", in_flight_id(scenario.state), 102_600))


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (123_456, "CNY", "1,234.56"),
        (5, "CNY", "0.05"),
        (-100_000_000, "CNY", "-1,000,000.00"),
        (0, "CNY", "0.00"),
        (1_234, "JPY", "1,234"),
        (1_234, "KWD", "1.234"),
    ],
)
def test_amounts_read_in_major_units(amount: int, currency: str, text: str) -> None:
    assert format_minor(amount, currency) == text


def test_sentences_keep_the_exact_minor_units() -> None:
    assert money(103_500, "CNY") == "1,035.00 CNY (103500)"


def test_derived_ids_are_shortened_and_short_ones_kept() -> None:
    assert short_id("b3b3b1a6326b5882a49b1bef3c42c3a3") == "b3b3b1a6"
    assert short_id("req-1") == "req-1"


def test_rows_follow_seq_and_say_what_happened() -> None:
    scenario = a_busy_loan()
    history = loan_history(LOAN, scenario.events)

    assert [row.seq for row in history.rows] == list(range(1, len(scenario.events) + 1))
    first = short_id(scenario.state.attempts[0].attempt_id)
    summaries: dict[str, str] = {}
    for row in history.rows:  # the first of each type
        summaries.setdefault(row.type, row.summary)
    assert summaries["LoanOpened"].startswith("opened for B1: 3,000.00 CNY (300000) over 3 months")
    assert summaries["BusinessDayClosed"] == "business day 2026-02-01 closed"
    assert summaries["DeductionStarted"].startswith(f"attempt {first} on alpha: 1,035.00 CNY")
    assert summaries["DeductionResubmissionRequested"] == (
        f"attempt {first}: no such order at the channel, submission 2"
    )
    assert summaries["DeductionSucceeded"].startswith(
        f"attempt {first} collected 1,035.00 CNY (103500) on alpha (ref ch-ref-1): fee #1 5.00"
    )
    assert "to refund" in summaries["DuplicateDebitRecorded"]
    assert summaries["DeductionFailed"].endswith("failed: insufficient_funds (final)")
    assert all(row.summary for row in history.rows)


def test_rows_carry_the_events_postings() -> None:
    scenario = a_busy_loan()
    history = loan_history(LOAN, scenario.events)
    assert [row.postings for row in history.rows] == [e.postings for e in scenario.events]


def test_attempts_and_refunds_are_the_deciders_own_state() -> None:
    scenario = a_busy_loan()
    history = loan_history(LOAN, scenario.events)

    assert history.attempts == scenario.state.attempts
    assert [a.status for a in history.attempts] == [AttemptStatus.SUCCEEDED, AttemptStatus.FAILED]
    assert history.attempts[0].submissions == 2
    assert [r.status for r in history.refunds] == [RefundStatus.SUCCEEDED]


def test_balances_are_the_fold_of_the_loans_postings() -> None:
    scenario = a_busy_loan()
    history = loan_history(LOAN, scenario.events)
    expected = fold_balances(p for e in scenario.events for p in e.postings)
    assert history.balances == expected
    assert sum(history.balances.values()) == 0


def test_repeats_after_a_crash_are_shown_once() -> None:
    events = a_busy_loan().events
    repeated = [*events[:5], *events[3:5], *events[5:]]

    history = loan_history(LOAN, repeated)

    assert [row.seq for row in history.rows] == list(range(1, len(events) + 1))
    assert history.repeats == 2
    assert history.gap is None


def test_a_gap_is_reported_and_the_state_stops_before_it() -> None:
    events = a_busy_loan().events
    with_gap = [e for e in events if e.seq != 4]

    history = loan_history(LOAN, with_gap)

    assert history.gap == (4, 5)
    assert len(history.rows) == len(events) - 1
    assert history.attempts == ()  # the first attempt starts after the gap


def test_json_has_full_ids_and_minor_units() -> None:
    scenario = a_busy_loan()
    document = history_json(loan_history(LOAN, scenario.events))

    assert document["loan_id"] == LOAN
    assert document["currency"] == "CNY"
    assert document["events"][0]["postings"] == [
        {"debit": "loan:L1:principal", "credit": "bank:funding", "amount_minor": 300_000,
         "currency": "CNY"}
    ]  # fmt: skip
    assert [a["attempt_id"] for a in document["attempts"]] == [
        a.attempt_id for a in scenario.state.attempts
    ]
    assert document["attempts"][0]["status"] == "succeeded"
    assert document["refunds"][0]["status"] == "succeeded"
    assert document["gap"] is None


def test_every_kind_of_event_reads_as_a_sentence() -> None:
    events = [*a_busy_loan().events, *a_troubled_loan().events]
    union = get_args(Event)[0]  # Annotated[A | B | ..., discriminator]
    every_type = {kind.model_fields["type"].default for kind in get_args(union)}
    assert {event.type for event in events} == every_type
    rows = loan_history(LOAN, a_troubled_loan().events).rows
    summaries = [row.summary for row in rows]
    attempts = [short_id(a.attempt_id) for a in a_troubled_loan().state.attempts]
    assert f"attempt {attempts[0]} stuck: in flight too long, an operator must look" in summaries
    assert f"attempt {attempts[0]} reversed by the channel: 1,035.00 CNY (103500) undone" in (
        summaries
    )
    assert "late fee 51.50 CNY (5150) on installment 1" in summaries
    assert "RequestRepayment req-4 refused: deduction_in_progress" in summaries
    assert (
        f"attempt {attempts[1]}: statement of 2026-02-02 shows missing_from_statement: "
        "on no statement"
    ) in summaries
    assert any(s.startswith("installment 2 recognised early: interest") for s in summaries)
    assert (
        f"attempt {attempts[2]}: ReportChannelSuccess named 1,026.00 CNY (102600), only the "
        "attempt's 1,025.00 CNY (102500) booked; an operator must look"
    ) in summaries
    assert any(s.endswith("failed: card_closed") and s.startswith("refund ") for s in summaries)
