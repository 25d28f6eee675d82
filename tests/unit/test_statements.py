"""Reconciliation against channel statements: given books and statements, when reconciled, then
these finding commands, which the decider accepts in the order they are sent."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import given as for_all
from hypothesis import strategies as st

from ledger import LoanState, decide
from ledger.identity import attempt_id
from ledger.state import Attempt, AttemptStatus
from ledger.statements import (
    Reconciliation,
    StatementEntry,
    booked_attempts,
    dates_to_reconcile,
    reconcile,
)
from schemas.commands import (
    DiscrepancyKind,
    ReportDuplicateDebit,
    ReportReversal,
    ReportStatementDiscrepancy,
    ReportUnrecordedSuccess,
    StatementFinding,
)
from schemas.outcomes import OutcomeStatus
from tests.support.builders import (
    FIRST_DUE,
    LOAN,
    after,
    close_day,
    failure,
    fold,
    given,
    request,
    reversal,
    small_loan,
    success,
)

D = FIRST_DUE  # the business date the attempts are booked on: the loan's last closed day
NEXT_DAY = D + timedelta(days=1)
ISSUED = datetime(2026, 2, 4, 1, 0, tzinfo=UTC)
ATTEMPT = attempt_id(LOAN, "r1", 0)
DUE = (small_loan(), close_day(FIRST_DUE))
OWED = 103_500  # installment 1 of the small loan
NOT_OURS = "f" * 32


def collected(amount: int = OWED) -> LoanState:
    """Installment 1 fell due, was requested as r1 and `amount` was collected as ch-ref-1."""
    return given(*DUE, request("r1"), success("s1", ATTEMPT, amount))


def line(
    reference: str = "ch-ref-1",
    *,
    order_id: str = ATTEMPT,
    amount: int = OWED,
    day: date = D,
    reversed_: bool = False,
) -> StatementEntry:
    return StatementEntry(order_id, reversed_, amount, reference, day)


def statements(lines: Sequence[StatementEntry], on: date) -> dict[date, list[StatementEntry]]:
    """The channel's statements of the day before `on`, `on` and the day after."""
    days = (on - timedelta(days=1), on, on + timedelta(days=1))
    return {day: [entry for entry in lines if entry.business_date == day] for day in days}


def reconciled(
    states: LoanState | Sequence[LoanState], *lines: StatementEntry, on: date = D
) -> Reconciliation:
    books = [states] if isinstance(states, LoanState) else states
    return reconcile("alpha", on, statements(lines, on), booked_attempts(books, "alpha"), ISSUED)


def common(command_id: str) -> dict[str, Any]:
    return {
        "command_id": command_id, "loan_id": LOAN, "issued_at": ISSUED, "order_id": ATTEMPT,
        "channel": "alpha", "statement_date": D,
    }  # fmt: skip


def attempt_of(state: LoanState) -> Attempt:
    found = state.attempt(ATTEMPT)
    assert found is not None
    return found


# ---- agreement -----------------------------------------------------------------------------


def test_a_success_on_its_business_date_matches() -> None:
    assert reconciled(collected(), line()) == Reconciliation((), 1, ())


def test_a_success_across_midnight_is_not_missing_and_matches_the_next_day() -> None:
    across = line(day=NEXT_DAY)
    assert reconciled(collected(), across, on=D) == Reconciliation((), 0, ())
    assert reconciled(collected(), across, on=NEXT_DAY) == Reconciliation((), 1, ())


def test_only_the_lines_of_the_statement_date_produce_findings() -> None:
    state = given(*DUE, request("r1"))
    assert reconciled(state, line(day=D - timedelta(days=1))) == Reconciliation((), 0, ())


def test_a_line_for_an_order_we_never_started_is_listed_and_not_reported() -> None:
    result = reconciled(collected(), line(), line("x-1", order_id=NOT_OURS))
    assert result == Reconciliation((), 1, (NOT_OURS,))


def test_reconciling_without_the_neighbouring_statements_is_a_bug() -> None:
    books = booked_attempts([collected()], "alpha")
    with pytest.raises(AssertionError, match="needs the statements"):
        reconcile("alpha", D, {D: [line()]}, books, ISSUED)


# ---- missing -------------------------------------------------------------------------------


def test_a_success_on_no_statement_is_missing_and_a_rerun_repeats_the_command() -> None:
    state = collected()
    missing = ReportStatementDiscrepancy(
        **common(f"rc:{ATTEMPT}:missing:20260201"),
        kind=DiscrepancyKind.MISSING_FROM_STATEMENT,
        detail="booked on 2026-02-01, on no statement from 2026-01-31 to 2026-02-02",
    )
    assert reconciled(state, line(order_id=NOT_OURS)) == Reconciliation((missing,), 0, (NOT_OURS,))
    state = after(state, missing)
    assert reconciled(state).findings == (missing,)
    assert decide(state, missing).outcome.status is OutcomeStatus.DUPLICATE


def test_an_attempt_that_never_succeeded_is_not_missing() -> None:
    failed = after(given(*DUE, request("r1")), failure("f1", ATTEMPT, "card_expired", False))
    assert reconciled(failed) == Reconciliation((), 0, ())


# ---- reversal ------------------------------------------------------------------------------


def test_a_reversed_line_reopens_the_installment() -> None:
    state = collected()
    result = reconciled(state, line(reversed_=True))
    assert result == Reconciliation((ReportReversal(**common(f"rc:{ATTEMPT}:reversal")),), 0, ())
    state = after(state, *result.findings)
    assert (attempt_of(state).status, state.installments[0].owed_minor) == (
        AttemptStatus.REVERSED,
        OWED,
    )
    assert reconciled(state, line(reversed_=True)) == Reconciliation((), 1, ())


def test_a_reversed_line_for_an_attempt_reversed_in_the_books_matches() -> None:
    state = after(collected(), reversal("rev-1", ATTEMPT))
    assert reconciled(state, line(reversed_=True)) == Reconciliation((), 1, ())


def test_a_succeeded_line_for_an_attempt_reversed_in_the_books_is_a_discrepancy() -> None:
    """Issue 15, D: a reversal the channel never made (forged, or misrouted) reopened the
    installment; the channel's statement still shows the debit succeeded."""
    state = after(collected(), reversal("rev-1", ATTEMPT))
    unreversed = ReportStatementDiscrepancy(
        **common(f"rc:{ATTEMPT}:unreversed:20260201"),
        kind=DiscrepancyKind.REVERSAL_NOT_ON_STATEMENT,
        detail="reversed in the books, succeeded on the statement (ch-ref-1)",
    )
    assert reconciled(state, line()) == Reconciliation((unreversed,), 0, ())
    state = after(state, unreversed)
    assert reconciled(state, line()).findings == (unreversed,)
    assert decide(state, unreversed).outcome.status is OutcomeStatus.DUPLICATE


def test_a_duplicate_debit_line_for_an_attempt_reversed_in_the_books_is_no_discrepancy() -> None:
    state = after(collected(), reversal("rev-1", ATTEMPT))
    digest = hashlib.sha256(b"ch-ref-2").hexdigest()[:12]
    result = reconciled(state, line(reversed_=True), line("ch-ref-2"))
    assert [f.command_id for f in result.findings] == [f"rc:{ATTEMPT}:dup:{digest}"]


# ---- duplicate debit -----------------------------------------------------------------------


def test_a_second_line_with_another_reference_is_a_duplicate_debit_reported_once() -> None:
    state = collected()
    digest = hashlib.sha256(b"ch-ref-2").hexdigest()[:12]
    duplicate = ReportDuplicateDebit(
        **common(f"rc:{ATTEMPT}:dup:{digest}"), channel_reference="ch-ref-2", amount_minor=OWED
    )
    lines = (line(), line("ch-ref-2"))
    assert reconciled(state, *lines) == Reconciliation((duplicate,), 1, ())
    state = after(state, duplicate)
    assert attempt_of(state).duplicate_debits == ("ch-ref-2",)
    assert reconciled(state, *lines) == Reconciliation((), 2, ())


# ---- unrecorded success --------------------------------------------------------------------


def unrecorded(reference: str = "ch-ref-1", amount: int = OWED) -> ReportUnrecordedSuccess:
    return ReportUnrecordedSuccess(
        **common(f"rc:{ATTEMPT}:unrecorded"), channel_reference=reference, amount_minor=amount
    )


def test_a_line_for_an_attempt_still_deducting_is_an_unrecorded_success() -> None:
    state = given(*DUE, request("r1"))
    assert reconciled(state, line()) == Reconciliation((unrecorded(),), 0, ())
    state = after(state, unrecorded())
    assert attempt_of(state).status is AttemptStatus.SUCCEEDED
    assert reconciled(state, line()) == Reconciliation((), 1, ())


def test_a_reversed_line_for_an_attempt_still_deducting_is_recorded_then_reversed() -> None:
    state = given(*DUE, request("r1"))
    result = reconciled(state, line(reversed_=True))
    assert result.findings == (unrecorded(), ReportReversal(**common(f"rc:{ATTEMPT}:reversal")))
    state = after(state, *result.findings)
    assert (attempt_of(state).status, state.installments[0].owed_minor) == (
        AttemptStatus.REVERSED,
        OWED,
    )


def test_a_debit_twice_for_a_failed_attempt_is_recorded_then_a_duplicate() -> None:
    state = after(given(*DUE, request("r1")), failure("f1", ATTEMPT, "card_expired", False))
    result = reconciled(state, line(), line("ch-ref-2"))
    assert [type(finding) for finding in result.findings] == [
        ReportUnrecordedSuccess,
        ReportDuplicateDebit,
    ]
    after(state, *result.findings)


# ---- amount --------------------------------------------------------------------------------


def test_a_line_with_another_amount_than_collected_is_an_amount_mismatch() -> None:
    mismatch = ReportStatementDiscrepancy(
        **common(f"rc:{ATTEMPT}:amount:20260201"),
        kind=DiscrepancyKind.AMOUNT_MISMATCH,
        detail=f"statement 103400, books {OWED}",
    )
    assert reconciled(collected(), line(amount=103_400)) == Reconciliation((mismatch,), 0, ())


def test_a_line_booked_days_after_its_attempt_started_is_a_discrepancy() -> None:
    """Issue 16, 11: a line booked ten days late used to pass silently."""
    late_day = D + timedelta(days=10)
    late = ReportStatementDiscrepancy(
        **common(f"rc:{ATTEMPT}:date:20260211") | {"statement_date": late_day},
        kind=DiscrepancyKind.BOOKED_ON_ANOTHER_DAY,
        detail=f"booked on {late_day}, started on {D}",
    )
    assert reconciled(collected(), line(day=late_day), on=late_day) == Reconciliation(
        (late,), 0, ()
    )
    assert reconciled(collected(), line(day=NEXT_DAY), on=NEXT_DAY).findings == ()


def test_a_longest_reference_still_fits_the_discrepancy() -> None:
    """A channel reference may be 200 characters, as long as a discrepancy's `detail`: the
    finding used to fail validation and stop the scheduled reconciler."""
    reference = "r" * 200
    state = given(*DUE, request("r1"), success("s1", ATTEMPT, OWED, reference))
    state = after(state, reversal("rev-1", ATTEMPT))
    [finding] = reconciled(state, line(reference)).findings
    assert isinstance(finding, ReportStatementDiscrepancy)
    assert finding.kind is DiscrepancyKind.REVERSAL_NOT_ON_STATEMENT
    assert len(finding.detail) == 200


# ---- the scheduled run's calendar ----------------------------------------------------------

MARCH_1 = date(2026, 3, 1)
LAST_THREE_DAYS = [date(2026, 2, 26), date(2026, 2, 27), date(2026, 2, 28)]


def test_the_calendar_is_the_partitions_clock_whatever_day_a_loan_closed() -> None:
    """Issue 15, G: a loan closed 2099-12-31 moves no channel's window once the clock ticks."""
    assert dates_to_reconcile([MARCH_1] * 4, [date(2099, 12, 31), D], 4) == LAST_THREE_DAYS


def test_a_tick_forged_for_a_minority_of_partitions_does_not_move_the_calendar() -> None:
    forged = date(2099, 12, 31)
    assert dates_to_reconcile([MARCH_1, forged, MARCH_1, MARCH_1], [], 4) == LAST_THREE_DAYS
    assert dates_to_reconcile([MARCH_1, forged, forged, MARCH_1], [], 4) == LAST_THREE_DAYS


def test_a_first_tick_forged_for_one_partition_of_an_unticked_ledger_does_not_move_it() -> None:
    """Until most partitions have a clock, the loans' days stay the calendar."""
    forged = date(2099, 12, 31)
    assert dates_to_reconcile([forged], [MARCH_1], 4) == LAST_THREE_DAYS
    assert dates_to_reconcile([forged, forged], [MARCH_1], 4) == LAST_THREE_DAYS
    assert dates_to_reconcile([MARCH_1] * 3, [forged], 4) == LAST_THREE_DAYS


def test_a_ledger_never_ticked_takes_the_latest_day_closed_on_a_loan() -> None:
    assert dates_to_reconcile([], [None, date(2026, 2, 1), MARCH_1], 4) == LAST_THREE_DAYS
    assert dates_to_reconcile([], [None], 4) == []


# ---- property: every finding is decidable and reconciliation converges ---------------------

FINAL_FATES = ("deducting", "failed", "succeeded", "reversed")


def books(loan_id: str, failures: int, fate: str) -> LoanState:
    """A loan whose installment 1 fell due on D, with `failures` failed attempts, then one more
    attempt that ends in `fate`."""
    state = given(small_loan(loan_id=loan_id), close_day(D, loan_id=loan_id), loan_id=loan_id)
    for number in range(failures + 1):
        state = after(state, request(f"r{number}", loan_id=loan_id))
        last = state.attempts[-1].attempt_id
        if number < failures or fate == "failed":
            state = after(state, failure(f"f{number}", last, "card_expired", False, loan_id))
        elif fate in ("succeeded", "reversed"):
            state = after(state, success(f"s{number}", last, OWED, f"ref-{last}", loan_id))
        if fate == "reversed" and number == failures:
            state = after(state, reversal(f"rev{number}", last, loan_id=loan_id))
    return state


@st.composite
def channel_lines(draw: st.DrawFn, attempt: Attempt) -> list[StatementEntry]:
    """What the channel may print for one attempt, whatever our books say about it."""
    if not draw(st.booleans()):
        return []
    first = StatementEntry(
        order_id=attempt.order_id,
        reversed=draw(st.booleans()),
        amount_minor=draw(st.sampled_from((attempt.amount_minor, attempt.amount_minor + 1))),
        channel_reference=attempt.channel_reference or f"ref-{attempt.order_id}",
        business_date=draw(st.sampled_from((D, NEXT_DAY))),
    )
    if not draw(st.booleans()):
        return [first]
    again = StatementEntry(
        first.order_id, False, first.amount_minor, f"dup-{first.order_id}", first.business_date
    )
    return [first, again]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[str, LoanState], list[StatementEntry]]:
    states: dict[str, LoanState] = {}
    lines: list[StatementEntry] = []
    for number in range(draw(st.integers(1, 3))):
        loan_id = f"L{number}"
        state = books(loan_id, draw(st.integers(0, 1)), draw(st.sampled_from(FINAL_FATES)))
        states[loan_id] = state
        for attempt in state.attempts:
            lines.extend(draw(channel_lines(attempt)))
    if draw(st.booleans()):
        lines.append(line("x-1", order_id=NOT_OURS, day=draw(st.sampled_from((D, NEXT_DAY)))))
    return states, lines


def reconcile_days(
    states: dict[str, LoanState], lines: list[StatementEntry]
) -> list[tuple[StatementFinding, OutcomeStatus]]:
    """Reconcile each day in turn, deciding every finding before the next day, as the shell
    does; returns each finding with the decider's verdict."""
    verdicts: list[tuple[StatementFinding, OutcomeStatus]] = []
    for day in (D - timedelta(days=1), D, NEXT_DAY, NEXT_DAY + timedelta(days=1)):
        for finding in reconciled(list(states.values()), *lines, on=day).findings:
            decision = decide(states[finding.loan_id], finding)
            states[finding.loan_id] = fold(states[finding.loan_id], decision.events)
            verdicts.append((finding, decision.outcome.status))
    return verdicts


@for_all(scenarios())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_finding_is_decidable_and_a_rerun_finds_nothing_new(
    scenario: tuple[dict[str, LoanState], list[StatementEntry]],
) -> None:
    states, lines = scenario
    first = reconcile_days(states, lines)
    decidable = (OutcomeStatus.ACCEPTED, OutcomeStatus.DUPLICATE)
    assert all(status in decidable for _, status in first), first
    rerun = reconcile_days(states, lines)
    assert all(status is not OutcomeStatus.ACCEPTED for _, status in rerun), rerun
