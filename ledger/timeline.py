"""A loan's history for people: its events as timeline rows, its attempts and refunds as tables.

Pure: the command line reads the events and renders what this module returns. The attempts and
refunds come from folding the events with the decider's own `evolve`, so what a person reads is
the state the decider acts on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ledger.balances import apply_postings
from ledger.sequence import LoanLog, Verdict
from ledger.state import Attempt, LoanState, Refund, initial_state
from schemas.events import (
    AutoDebitDue,
    BusinessDayClosed,
    ChargesRecognisedEarly,
    CommandRejected,
    DeductionFailed,
    DeductionOutcomeUnknown,
    DeductionProcessing,
    DeductionResubmissionRequested,
    DeductionReversed,
    DeductionStarted,
    DeductionStuck,
    DeductionSubmitted,
    DeductionSucceeded,
    DuplicateDebitRecorded,
    Event,
    InstallmentFellDue,
    LateFeeAssessed,
    LoanOpened,
    Posting,
    RefundFailed,
    RefundStarted,
    RefundSucceeded,
    ReportedAmountAboveAttempt,
    StatementDiscrepancyFound,
)

# ISO 4217 exponents that are not 2; every other currency has cents (CNY: fen).
MINOR_DIGITS = {"JPY": 0, "KRW": 0, "BHD": 3, "KWD": 3}
SHORT_ID = 8


def format_minor(amount_minor: int, currency: str) -> str:
    """An amount in major units with thousands separators: 123456 CNY -> "1,234.56"."""
    digits = MINOR_DIGITS.get(currency, 2)
    sign = "-" if amount_minor < 0 else ""
    major, minor = divmod(abs(amount_minor), 10**digits)
    return f"{sign}{major:,}" + (f".{minor:0{digits}d}" if digits else "")


def money(amount_minor: int, currency: str) -> str:
    """For sentences: major units, currency, and the exact minor units the ledger keeps."""
    return f"{format_minor(amount_minor, currency)} {currency} ({amount_minor})"


def short_id(identifier: str) -> str:
    """Derived ids are 32 hex digits; their first 8 tell the attempts of one loan apart."""
    return identifier[:SHORT_ID] if len(identifier) > SHORT_ID + 4 else identifier


@dataclass(frozen=True)
class TimelineRow:
    seq: int
    event_id: str
    occurred_at: datetime
    type: str
    summary: str
    postings: tuple[Posting, ...]


@dataclass(frozen=True)
class LoanHistory:
    loan_id: str
    currency: str
    rows: tuple[TimelineRow, ...]
    attempts: tuple[Attempt, ...]
    refunds: tuple[Refund, ...]
    balances: dict[str, int]  # what the loan's events posted, net per account
    repeats: int = 0  # events seen again after a crash, shown once
    gap: tuple[int, int] | None = None  # (seq expected, seq found): the log lacks events


def loan_history(loan_id: str, events: Iterable[Event]) -> LoanHistory:
    """The history of one loan from its events in log order; repeats of a seq are dropped."""
    unique: dict[int, Event] = {}
    seen = 0
    for event in events:
        seen += 1
        unique.setdefault(event.seq, event)
    ordered = [unique[seq] for seq in sorted(unique)]
    state, gap = _fold(loan_id, ordered)
    currency = state.terms.currency if state.terms else "CNY"
    balances: dict[str, int] = {}
    for event in ordered:
        apply_postings(balances, event.postings)
    return LoanHistory(
        loan_id=loan_id,
        currency=currency,
        rows=tuple(_row(event, currency) for event in ordered),
        attempts=state.attempts,
        refunds=state.refunds,
        balances=dict(sorted(balances.items())),
        repeats=seen - len(ordered),
        gap=gap,
    )


def _fold(loan_id: str, ordered: list[Event]) -> tuple[LoanState, tuple[int, int] | None]:
    """The state up to the first gap in seq, and the gap (the seq rule, ledger.sequence): the
    history still lists every event, so an operator sees what lies past the gap."""
    loans = LoanLog()
    for event in ordered:
        if loans.fold(event) is Verdict.GAP:
            quarantine = loans.quarantined[event.loan_id]
            state = loans.states.get(loan_id) or initial_state(loan_id)
            return state, (quarantine.expected_seq, event.seq)
    return loans.states.get(loan_id) or initial_state(loan_id), None


def _row(event: Event, currency: str) -> TimelineRow:
    return TimelineRow(
        seq=event.seq,
        event_id=event.event_id,
        occurred_at=event.occurred_at,
        type=event.type,
        summary=describe(event, currency),
        postings=event.postings,
    )


def describe(event: Event, currency: str) -> str:
    """What happened, in one line."""
    match event:
        case LoanOpened():
            return _opened(event)
        case BusinessDayClosed():
            return f"business day {event.business_date} closed"
        case InstallmentFellDue() | ChargesRecognisedEarly():
            when = "fell due" if isinstance(event, InstallmentFellDue) else "recognised early"
            return (
                f"installment {event.installment} {when}: interest "
                f"{money(event.interest_recognised_minor, currency)}, "
                f"fee {money(event.fee_recognised_minor, currency)} recognised"
            )
        case LateFeeAssessed():
            return (
                f"late fee {money(event.amount_minor, currency)} on installment {event.installment}"
            )
        case AutoDebitDue():
            return f"auto-debit due for installments {_numbers(event.installments)}"
        case DeductionStarted():
            return _started(event, currency)
        case DeductionSucceeded():
            return _succeeded(event, currency)
        case DeductionReversed():
            undone = sum(a.amount_minor for a in event.allocations) + event.excess_minor
            return f"{_attempt(event)} reversed by the channel: {money(undone, currency)} undone"
        case DuplicateDebitRecorded():
            return (
                f"{_attempt(event)} debited twice (ref {event.channel_reference}): "
                f"{money(event.amount_minor, currency)} to refund"
            )
        case ReportedAmountAboveAttempt():
            return (
                f"{_attempt(event)}: {event.report_type} named "
                f"{money(event.reported_minor, currency)}, only the attempt's "
                f"{money(event.booked_minor, currency)} booked; an operator must look"
            )
        case _:
            return _attempt_step(event) or _refund_step(event, currency)


def _attempt_step(event: Event) -> str | None:
    """The steps of an attempt that move no money."""
    match event:
        case DeductionSubmitted():
            return f"{_attempt(event)} submitted to the channel"
        case DeductionProcessing():
            return f"{_attempt(event)}: the channel is processing it"
        case DeductionOutcomeUnknown():
            return f"{_attempt(event)}: outcome unknown ({event.detail}), to be queried"
        case DeductionResubmissionRequested():
            return f"{_attempt(event)}: no such order at the channel, submission {event.submission}"
        case DeductionStuck():
            return f"{_attempt(event)} stuck: in flight too long, an operator must look"
        case DeductionFailed():
            retry = "retriable" if event.retriable else "final"
            return f"{_attempt(event)} failed: {event.code} ({retry})"
        case StatementDiscrepancyFound():
            return (
                f"{_attempt(event)}: statement of {event.statement_date} shows "
                f"{event.kind.value}: {event.detail}"
            )
    return None


def _refund_step(event: Event, currency: str) -> str:
    match event:
        case RefundStarted():
            return (
                f"refund {short_id(event.refund_id)} of {money(event.amount_minor, currency)} "
                f"started on {event.channel}"
            )
        case RefundSucceeded():
            return f"refund {short_id(event.refund_id)} paid (ref {event.channel_reference})"
        case RefundFailed():
            return f"refund {short_id(event.refund_id)} failed: {event.code}"
        case CommandRejected():
            return f"{event.command_type} {event.causation_id} refused: {event.reason.value}"
    return event.type


def _opened(event: LoanOpened) -> str:
    rate = f"{event.annual_rate_bps / 100:.2f}%"
    return (
        f"opened for {event.borrower_id}: {money(event.principal_minor, event.currency)} over "
        f"{event.term_months} months, {event.repayment_method.value} at {rate} a year, "
        f"{len(event.schedule)} installments from {event.schedule[0].due_date}"
    )


def _started(event: DeductionStarted, currency: str) -> str:
    retry = f", after {short_id(event.previous_attempt_id)}" if event.previous_attempt_id else ""
    return (
        f"{_attempt(event)} on {event.channel}: {money(event.amount_minor, currency)} for "
        f"installments {_numbers(event.installments)}, requested via {event.source.value} by "
        f"{event.requested_by}{retry}"
    )


def _succeeded(event: DeductionSucceeded, currency: str) -> str:
    parts = [
        f"{a.component.value} #{a.installment} {format_minor(a.amount_minor, currency)}"
        for a in event.allocations
    ]
    excess = f", excess {money(event.excess_minor, currency)}" if event.excess_minor else ""
    found = " (found by reconciliation)" if event.found_by_reconciliation else ""
    return (
        f"{_attempt(event)} collected {money(event.amount_minor, currency)} on {event.channel} "
        f"(ref {event.channel_reference}){found}: {', '.join(parts) or 'nothing due'}{excess}"
    )


def _attempt(event: Any) -> str:
    return f"attempt {short_id(event.attempt_id)}"


def _numbers(numbers: Iterable[int]) -> str:
    return ", ".join(str(n) for n in numbers) or "-"


def attempt_status(attempt: Attempt) -> str:
    """The status, with what else an operator should know about the attempt."""
    notes = [f"submitted {attempt.submissions}x"] if attempt.submissions > 1 else []
    notes += ["flagged stuck"] if attempt.stuck_flagged else []
    notes += (
        [f"{len(attempt.duplicate_debits)} duplicate debit"] if attempt.duplicate_debits else []
    )
    return attempt.status.value + (f" ({', '.join(notes)})" if notes else "")


# ---- table cells, for the command line --------------------------------------------------------


def timeline_cells(history: LoanHistory) -> list[list[str]]:
    """seq, time, event, what happened, postings (one line each) per event."""
    currency = history.currency
    return [
        [str(r.seq), r.occurred_at.strftime("%Y-%m-%d %H:%M:%S"), r.type, r.summary,
         "\n".join(f"Dr {p.debit}  Cr {p.credit}  {format_minor(p.amount_minor, currency)}"
                   for p in r.postings)]
        for r in history.rows
    ]  # fmt: skip


ATTEMPT_HEADERS = ["attempt", "channel", "source", "amount", "collected", "status", "started"]


def attempt_cells(history: LoanHistory) -> list[list[str]]:
    currency = history.currency
    return [
        [short_id(a.attempt_id), a.channel, a.source.value, format_minor(a.amount_minor, currency),
         format_minor(a.collected_minor, currency), attempt_status(a),
         a.started_at.strftime("%Y-%m-%d %H:%M")]
        for a in history.attempts
    ]  # fmt: skip


REFUND_HEADERS = ["refund", "channel", "amount", "status"]


def refund_cells(history: LoanHistory) -> list[list[str]]:
    return [
        [
            short_id(r.refund_id),
            r.channel,
            format_minor(r.amount_minor, history.currency),
            r.status.value,
        ]
        for r in history.refunds
    ]


BALANCE_HEADERS = ["account", "balance", "currency", "minor units"]


def balance_cells(balances: Iterable[tuple[str, int, str]]) -> list[list[str]]:
    """account, balance in major units, currency, minor units."""
    return [[a, format_minor(amount, c), c, str(amount)] for a, amount, c in balances]


# ---- JSON ----------------------------------------------------------------------------------------


def history_json(history: LoanHistory) -> dict[str, Any]:
    """The history as JSON-ready values; ids in full, amounts in minor units."""
    return {
        "loan_id": history.loan_id,
        "currency": history.currency,
        "events": [_row_json(row) for row in history.rows],
        "attempts": [
            {
                "attempt_id": a.attempt_id,
                "channel": a.channel,
                "source": a.source.value,
                "amount_minor": a.amount_minor,
                "collected_minor": a.collected_minor,
                "status": a.status.value,
                "submissions": a.submissions,
                "stuck_flagged": a.stuck_flagged,
                "started_at": a.started_at.isoformat(),
            }
            for a in history.attempts
        ],
        "refunds": [
            {
                "refund_id": r.refund_id,
                "channel": r.channel,
                "amount_minor": r.amount_minor,
                "status": r.status.value,
            }
            for r in history.refunds
        ],
        "balances": history.balances,
        "repeated_events": history.repeats,
        "gap": None
        if history.gap is None
        else {"expected": history.gap[0], "found": history.gap[1]},
    }


def _row_json(row: TimelineRow) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "event_id": row.event_id,
        "occurred_at": row.occurred_at.isoformat(),
        "type": row.type,
        "summary": row.summary,
        "postings": [p.model_dump(mode="json") for p in row.postings],
    }
