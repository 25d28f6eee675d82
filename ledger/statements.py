"""Channel statements against our books: every line that disagrees becomes a finding command."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from msgspec.structs import replace

from ledger.deduction import bookable
from ledger.reconciliation import COLLECTED
from ledger.state import Attempt, AttemptStatus, LoanState
from schemas.commands import (
    DiscrepancyKind,
    ReportDuplicateDebit,
    ReportReversal,
    ReportStatementDiscrepancy,
    ReportUnrecordedSuccess,
    StatementFinding,
)

ONE_DAY = timedelta(days=1)
RECENT_DAYS = 3  # a scheduled run reconciles this many business days before the calendar's


@dataclass(frozen=True, slots=True)
class StatementEntry:
    """One line of a channel statement as the core sees it (the shell converts the wire model)."""

    order_id: str
    reversed: bool  # status "reversed" on the statement
    amount_minor: int
    channel_reference: str
    business_date: date


@dataclass(frozen=True, slots=True)
class BookedAttempt:
    loan_id: str
    attempt: Attempt


@dataclass(frozen=True, slots=True)
class Reconciliation:
    findings: tuple[StatementFinding, ...]  # commands to send, in the order they must be sent
    matched: int  # statement lines that agreed with the books
    unknown_orders: tuple[str, ...]  # lines for orders we have no attempt for (not ours)


def booked_attempts(states: Iterable[LoanState], channel: str) -> dict[str, BookedAttempt]:
    """Every attempt of the channel, by order id."""
    booked: dict[str, BookedAttempt] = {}
    for state in states:
        for attempt in state.attempts:
            if attempt.channel != channel:
                continue
            # Order ids derive from the loan id, so two loans can never share one.
            assert attempt.order_id not in booked, f"order {attempt.order_id} booked twice"
            booked[attempt.order_id] = BookedAttempt(state.loan_id, attempt)
    return booked


def dates_to_reconcile(
    partition_days: Collection[date], loan_days: Iterable[date | None], partitions: int
) -> list[date]:
    """The recent business days a scheduled run reconciles, each with its next day's statement.

    The calendar is the business clock once most of the `partitions` have one (`partition_days`,
    moved by ticks only; `ledger close-day` ticks them all): the median of their days, so a tick
    forged for a minority of partitions does not move it, nor does a loan's own CloseBusinessDay,
    however far ahead. A ledger not ticked (closed per loan) has no other calendar than its
    loans: the latest day closed on any of them."""
    if len(partition_days) > partitions // 2:
        today = sorted(partition_days)[(len(partition_days) - 1) // 2]
    else:
        closed = [day for day in loan_days if day is not None]
        if not closed:
            return []
        today = max(closed)
    return [today - timedelta(days=back) for back in range(RECENT_DAYS, 0, -1)]


def reconcile(
    channel: str,
    statement_date: date,
    statements: Mapping[date, Sequence[StatementEntry]],
    booked: Mapping[str, BookedAttempt],
    issued_at: datetime,
) -> Reconciliation:
    """The findings of the statement of `statement_date`; the neighbouring days' statements only
    excuse a success booked across midnight from being reported missing."""
    window = (statement_date - ONE_DAY, statement_date, statement_date + ONE_DAY)
    absent = [day.isoformat() for day in window if day not in statements]
    assert not absent, f"reconciling {statement_date} needs the statements of {absent} too"
    run = _Run(channel, statement_date, issued_at)
    findings: list[StatementFinding] = []
    matched = 0
    unknown: list[str] = []
    for order_id, lines in _by_order(statements[statement_date]).items():
        entry = booked.get(order_id)
        if entry is None:
            unknown.append(order_id)
            continue
        assert entry.attempt.channel == channel, f"{order_id} is booked on {entry.attempt.channel}"
        order_findings, order_matched = _reconcile_order(run, entry, lines)
        findings.extend(order_findings)
        matched += order_matched
    on_statements = {line.order_id for day in window for line in statements[day]}
    findings.extend(_missing(run, booked, on_statements))
    # Stable: the findings of one order keep the order they must be decided in.
    findings.sort(key=lambda finding: finding.order_id)
    return Reconciliation(tuple(findings), matched, tuple(sorted(unknown)))


def _by_order(lines: Sequence[StatementEntry]) -> dict[str, list[StatementEntry]]:
    """The day's lines grouped by order id, each group in statement order."""
    groups: dict[str, list[StatementEntry]] = {}
    for line in lines:
        groups.setdefault(line.order_id, []).append(line)
    return groups


def _reconcile_order(
    run: _Run, entry: BookedAttempt, lines: Sequence[StatementEntry]
) -> tuple[list[StatementFinding], int]:
    """The findings of one order's lines and how many lines agreed with the books.

    `view` is the attempt as the decider will see it once the earlier findings are decided: the
    later lines are judged against it, so the commands are accepted in the order they are sent.
    """
    view = entry.attempt
    findings: list[StatementFinding] = []
    matched = 0
    for line in lines:
        view, found = _check_line(run, entry.loan_id, view, line)
        matched += not found
        # A line printed twice with a wrong amount repeats the same command: send it once.
        findings.extend(finding for finding in found if finding not in findings)
    return findings, matched


def _check_line(
    run: _Run, loan_id: str, view: Attempt, line: StatementEntry
) -> tuple[Attempt, list[StatementFinding]]:
    found: list[StatementFinding] = []
    if view.status not in COLLECTED:
        # The money moved but the channel's answer never reached our books: post it first.
        found.append(run.unrecorded(loan_id, line))
        view = replace(
            view,
            status=AttemptStatus.SUCCEEDED,
            channel_reference=line.channel_reference,
            collected_minor=bookable(view, line.amount_minor),  # any more is flagged, not booked
        )
    if line.reversed:
        view, reversal = _reversed_line(run, loan_id, view)
        return view, found + reversal
    view, judged = _succeeded_line(run, loan_id, view, line)
    return view, found + judged


def _reversed_line(
    run: _Run, loan_id: str, view: Attempt
) -> tuple[Attempt, list[StatementFinding]]:
    if view.status is AttemptStatus.REVERSED:
        return view, []
    reversal = run.reversal(loan_id, view.order_id)
    return replace(view, status=AttemptStatus.REVERSED), [reversal]


def _succeeded_line(
    run: _Run, loan_id: str, view: Attempt, line: StatementEntry
) -> tuple[Attempt, list[StatementFinding]]:
    reference = line.channel_reference
    if reference != view.channel_reference and reference not in view.duplicate_debits:
        # Another debit for an order already paid: the decider refunds it, once per reference.
        duplicates = (*view.duplicate_debits, reference)
        return replace(view, duplicate_debits=duplicates), [run.duplicate(loan_id, line)]
    if reference == view.channel_reference and view.status is AttemptStatus.REVERSED:
        # A line carries the order's current status: the channel never reversed this debit.
        return view, [run.reversal_not_on_statement(loan_id, line)]
    found: list[StatementFinding] = []
    started = view.business_date  # a day either way is midnight between us and the channel
    ours = reference == view.channel_reference
    if ours and started is not None and abs(line.business_date - started) > ONE_DAY:
        found.append(run.booked_on_another_day(loan_id, line, started))
    # Only our own debit can disagree on the amount. After a reversal both sides are back to
    # zero, so a differing amount no longer leaves money unaccounted for.
    disagrees = (
        reference == view.channel_reference
        and view.status is AttemptStatus.SUCCEEDED
        and line.amount_minor != view.collected_minor
    )
    if disagrees:
        found.append(run.amount_mismatch(loan_id, line, view.collected_minor))
    return view, found


def _missing(
    run: _Run, booked: Mapping[str, BookedAttempt], on_statements: set[str]
) -> list[StatementFinding]:
    """Our successes of the day that no statement of the day, the day before or after shows."""
    return [
        run.missing(entry.loan_id, entry.attempt)
        for order_id, entry in sorted(booked.items())
        if entry.attempt.status in COLLECTED
        and entry.attempt.business_date == run.statement_date
        and order_id not in on_statements
    ]


@dataclass(frozen=True, slots=True)
class _Run:
    """What every command of one reconciliation run shares. Command ids derive from the order
    and the line, never from the run, so a rerun's commands are duplicates at the decider."""

    channel: str
    statement_date: date
    issued_at: datetime

    def _common(self, loan_id: str, order_id: str, *id_parts: str) -> dict[str, Any]:
        return {
            "command_id": ":".join(("rc", order_id, *id_parts)),
            "loan_id": loan_id,
            "issued_at": self.issued_at,
            "order_id": order_id,
            "channel": self.channel,
            "statement_date": self.statement_date,
        }

    def unrecorded(self, loan_id: str, line: StatementEntry) -> ReportUnrecordedSuccess:
        return ReportUnrecordedSuccess(
            **self._common(loan_id, line.order_id, "unrecorded"),
            channel_reference=line.channel_reference,
            amount_minor=line.amount_minor,
        )

    def reversal(self, loan_id: str, order_id: str) -> ReportReversal:
        return ReportReversal(**self._common(loan_id, order_id, "reversal"))

    def duplicate(self, loan_id: str, line: StatementEntry) -> ReportDuplicateDebit:
        # A channel reference is free text; its hash keeps the command id short and well formed.
        digest = hashlib.sha256(line.channel_reference.encode()).hexdigest()[:12]
        return ReportDuplicateDebit(
            **self._common(loan_id, line.order_id, "dup", digest),
            channel_reference=line.channel_reference,
            amount_minor=line.amount_minor,
        )

    def amount_mismatch(
        self, loan_id: str, line: StatementEntry, books_minor: int
    ) -> ReportStatementDiscrepancy:
        return ReportStatementDiscrepancy(
            **self._common(loan_id, line.order_id, "amount", f"{self.statement_date:%Y%m%d}"),
            kind=DiscrepancyKind.AMOUNT_MISMATCH,
            detail=f"statement {line.amount_minor}, books {books_minor}",
        )

    def reversal_not_on_statement(
        self, loan_id: str, line: StatementEntry
    ) -> ReportStatementDiscrepancy:
        return ReportStatementDiscrepancy(
            **self._common(loan_id, line.order_id, "unreversed", f"{self.statement_date:%Y%m%d}"),
            kind=DiscrepancyKind.REVERSAL_NOT_ON_STATEMENT,
            detail=_short(
                f"reversed in the books, succeeded on the statement ({line.channel_reference})"
            ),
        )

    def booked_on_another_day(
        self, loan_id: str, line: StatementEntry, started: date
    ) -> ReportStatementDiscrepancy:
        return ReportStatementDiscrepancy(
            **self._common(loan_id, line.order_id, "date", f"{self.statement_date:%Y%m%d}"),
            kind=DiscrepancyKind.BOOKED_ON_ANOTHER_DAY,
            detail=f"booked on {line.business_date}, started on {started}",
        )

    def missing(self, loan_id: str, attempt: Attempt) -> ReportStatementDiscrepancy:
        day = self.statement_date
        return ReportStatementDiscrepancy(
            **self._common(loan_id, attempt.order_id, "missing", f"{day:%Y%m%d}"),
            kind=DiscrepancyKind.MISSING_FROM_STATEMENT,
            detail=f"booked on {day}, on no statement from {day - ONE_DAY} to {day + ONE_DAY}",
        )


def _short(text: str) -> str:
    """At most a `detail`'s 200 characters: a channel reference alone may be as long."""
    return text if len(text) <= 200 else text[:199] + "…"
