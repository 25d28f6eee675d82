"""What the analysts' report shows, folded from the event log: pure series and tables, no I/O.

Input: the events in log order (each loan's events in its partition's order), each with the
Kafka timestamp of its record. An event whose seq its loan has already reached (a repeat after a
crash under at-least-once) is counted once: memory grows with loans and attempts, not events.
Money stays integer minor units; only `format_yuan` makes text.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from ledger import accounts
from ledger.sequence import SeqTracker, Verdict
from ledger.timeline import format_minor
from schemas.events import (
    BusinessDayClosed,
    DeductionFailed,
    DeductionOutcomeUnknown,
    DeductionResubmissionRequested,
    DeductionReversed,
    DeductionStarted,
    DeductionSucceeded,
    Event,
    LoanOpened,
    RefundStarted,
    RefundSucceeded,
)

COMPONENTS = ("principal", "interest", "fee")
IN_FLIGHT, SUCCEEDED, FAILED, REVERSED = "in_flight", "succeeded", "failed", "reversed"
PERCENTILES = (50, 90, 99)


@dataclass(frozen=True, slots=True)
class Headline:
    loans: int
    attempts: int
    succeeded: int  # attempts the channel confirmed, later reversals included
    decided: int  # attempts with a final answer (succeeded, failed or reversed)
    collected_minor: int  # every DeductionSucceeded amount
    reversed_minor: int
    refunded_minor: int  # refunds the channel confirmed
    outstanding_minor: int  # principal + interest + fee receivable, all loans, now

    @property
    def success_rate_bps(self) -> int | None:
        """Succeeded / decided in basis points, rounded half up; None before any answer."""
        if self.decided == 0:
            return None
        return (self.succeeded * 20_000 + self.decided) // (2 * self.decided)


@dataclass(frozen=True, slots=True)
class ChannelRow:
    channel: str
    attempts: int
    succeeded: int
    failed: int
    reversed: int
    in_flight: int
    unknowns_resolved: int  # attempts once "outcome unknown" that later got a final answer
    collected_minor: int
    reversed_minor: int
    refunded_minor: int


@dataclass(frozen=True, slots=True)
class Collections:
    """Per channel, one amount per date: successes by the attempt's business date, reversals
    by the business date on which they were recorded."""

    dates: tuple[date, ...]
    collected_minor: Mapping[str, tuple[int, ...]]
    reversed_minor: Mapping[str, tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class Outstanding:
    """Receivables at the end of each business date, per component, summed over all loans.

    A loan's postings count on its latest closed business date; those before its first close on
    that first date; a loan with no close yet on the latest date of all (so the series ends at
    today's total), or before any close at all, on the date its first event occurred.
    """

    dates: tuple[date, ...]
    by_component_minor: Mapping[str, tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class ChannelOutcomes:
    channel: str
    succeeded: int
    reversed: int
    failed_by_code: Mapping[str, int]
    in_flight: int


@dataclass(frozen=True, slots=True)
class Settlement:
    """Milliseconds from the DeductionStarted record to the DeductionSucceeded record."""

    durations_ms: tuple[int, ...]  # sorted
    percentiles_ms: Mapping[int, int]  # nearest rank; empty when there is no settlement


@dataclass(frozen=True, slots=True)
class Report:
    events: int
    repeats_skipped: int
    quarantined: tuple[str, ...]  # loans whose log skipped a seq: their later events left out
    first_timestamp_ms: int | None
    last_timestamp_ms: int | None
    headline: Headline
    channels: tuple[ChannelRow, ...]
    collections: Collections
    outstanding: Outstanding
    outcomes: tuple[ChannelOutcomes, ...]
    settlement: Settlement


@dataclass
class _Attempt:
    channel: str
    business_date: date
    started_ms: int
    status: str = IN_FLIGHT
    code: str = ""
    was_unknown: bool = False
    resolved_unknown: bool = False
    succeeded: bool = False


@dataclass
class _Fold:
    """The mutable accumulator behind `build_report`; never leaves this module."""

    seqs: SeqTracker = field(default_factory=SeqTracker)
    events: int = 0
    repeats: int = 0
    first_timestamp_ms: int | None = None
    last_timestamp_ms: int | None = None
    loans: int = 0
    loan_dates: dict[str, date] = field(default_factory=dict)
    attempts: dict[str, _Attempt] = field(default_factory=dict)
    collected: dict[tuple[date, str], int] = field(default_factory=lambda: defaultdict(int))
    reversed: dict[tuple[date, str], int] = field(default_factory=lambda: defaultdict(int))
    receivable_moves: dict[tuple[date, str], int] = field(default_factory=lambda: defaultdict(int))
    undated_moves: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    first_dates: dict[str, date] = field(default_factory=dict)  # each loan's first occurred_at
    refunds_started: dict[str, tuple[str, int]] = field(default_factory=dict)
    refunded: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    settlements_ms: list[int] = field(default_factory=list)


def build_report(records: Iterable[tuple[Event, int]]) -> Report:
    """Fold (event, kafka_timestamp_ms) pairs, in log order, into the report's figures."""
    fold = _Fold()
    for event, timestamp_ms in records:
        verdict = fold.seqs.admit(event.loan_id, event.seq)
        if verdict is not Verdict.NEXT:
            fold.repeats += verdict is Verdict.REPEAT
            continue
        _count(fold, timestamp_ms)
        _apply(fold, event, timestamp_ms)
    return _freeze(fold)


def _count(fold: _Fold, timestamp_ms: int) -> None:
    fold.events += 1
    first, last = fold.first_timestamp_ms, fold.last_timestamp_ms
    fold.first_timestamp_ms = timestamp_ms if first is None else min(first, timestamp_ms)
    fold.last_timestamp_ms = timestamp_ms if last is None else max(last, timestamp_ms)


def _business_date(fold: _Fold, event: Event) -> date:
    """The loan's latest closed business date; before its first close, the event's own date
    (the rule the decider uses to date a DeductionStarted)."""
    return fold.loan_dates.get(event.loan_id) or event.occurred_at.date()


def _apply(fold: _Fold, event: Event, timestamp_ms: int) -> None:
    match event:
        case LoanOpened():
            fold.loans += 1
        case BusinessDayClosed():
            _close(fold, event)
        case DeductionStarted():
            _started(fold, event, timestamp_ms)
        case DeductionOutcomeUnknown() | DeductionResubmissionRequested():
            if event.attempt_id in fold.attempts:
                fold.attempts[event.attempt_id].was_unknown = True
        case DeductionSucceeded():
            _succeeded(fold, event, timestamp_ms)
        case DeductionFailed():
            _settle(fold, event.attempt_id, FAILED, event.code)
        case DeductionReversed():
            _reversed(fold, event)
        case RefundStarted():
            fold.refunds_started[event.refund_id] = (event.channel, event.amount_minor)
        case RefundSucceeded():
            channel, amount = fold.refunds_started.get(event.refund_id, ("unknown", 0))
            fold.refunded[channel] += amount
        case _:
            pass
    _move_receivables(fold, event)


def _started(fold: _Fold, event: DeductionStarted, timestamp_ms: int) -> None:
    day = event.business_date or _business_date(fold, event)
    fold.attempts.setdefault(event.attempt_id, _Attempt(event.channel, day, timestamp_ms))


def _succeeded(fold: _Fold, event: DeductionSucceeded, timestamp_ms: int) -> None:
    if event.attempt_id not in fold.attempts:
        # A success with no recorded start (not produced by this decider): date it as its loan.
        day = _business_date(fold, event)
        fold.attempts[event.attempt_id] = _Attempt(event.channel, day, timestamp_ms)
    attempt = fold.attempts[event.attempt_id]
    fold.collected[(attempt.business_date, event.channel)] += event.amount_minor
    if not attempt.succeeded:
        fold.settlements_ms.append(timestamp_ms - attempt.started_ms)
    attempt.succeeded = True
    _settle(fold, event.attempt_id, SUCCEEDED, "")


def _settle(fold: _Fold, attempt_id: str, status: str, code: str) -> None:
    attempt = fold.attempts.get(attempt_id)
    if attempt is None:
        return
    attempt.status, attempt.code = status, code
    attempt.resolved_unknown = attempt.resolved_unknown or attempt.was_unknown


def _reversed(fold: _Fold, event: DeductionReversed) -> None:
    attempt = fold.attempts.get(event.attempt_id)
    channel = attempt.channel if attempt else "unknown"
    amount = sum(a.amount_minor for a in event.allocations) + event.excess_minor
    fold.reversed[(_business_date(fold, event), channel)] += amount
    _settle(fold, event.attempt_id, REVERSED, "")


def _close(fold: _Fold, event: BusinessDayClosed) -> None:
    """A loan's first close dates what moved before it: the loan lived through that day."""
    fold.loan_dates[event.loan_id] = event.business_date
    for component in COMPONENTS:
        amount = fold.undated_moves.pop((event.loan_id, component), 0)
        fold.receivable_moves[(event.business_date, component)] += amount


def _move_receivables(fold: _Fold, event: Event) -> None:
    day = fold.loan_dates.get(event.loan_id)
    fold.first_dates.setdefault(event.loan_id, event.occurred_at.date())
    for component, amount in _receivable_moves(event):
        if day is None:
            fold.undated_moves[(event.loan_id, component)] += amount
        else:
            fold.receivable_moves[(day, component)] += amount


def _receivable_moves(event: Event) -> Iterator[tuple[str, int]]:
    """Receivable balances are debits minus credits of the loan's principal/interest/fee."""
    component_of = dict(zip(accounts.receivables(event.loan_id), COMPONENTS, strict=True))
    for posting in event.postings:
        if posting.debit in component_of:
            yield component_of[posting.debit], posting.amount_minor
        if posting.credit in component_of:
            yield component_of[posting.credit], -posting.amount_minor


def _freeze(fold: _Fold) -> Report:
    attempts = list(fold.attempts.values())
    channels = sorted({a.channel for a in attempts} | {c for _, c in fold.collected})
    _date_loans_never_closed(fold)
    outstanding = _outstanding(fold)
    return Report(
        events=fold.events,
        repeats_skipped=fold.repeats,
        quarantined=tuple(q.describe() for q in fold.seqs.quarantined.values()),
        first_timestamp_ms=fold.first_timestamp_ms,
        last_timestamp_ms=fold.last_timestamp_ms,
        headline=_headline(fold, attempts, outstanding),
        channels=tuple(_channel_row(fold, channel, attempts) for channel in channels),
        collections=_collections(fold, channels),
        outstanding=outstanding,
        outcomes=tuple(_outcomes(channel, attempts) for channel in channels),
        settlement=settlement(fold.settlements_ms),
    )


def _headline(fold: _Fold, attempts: list[_Attempt], outstanding: Outstanding) -> Headline:
    now = sum(series[-1] for series in outstanding.by_component_minor.values() if series)
    return Headline(
        loans=fold.loans,
        attempts=len(attempts),
        succeeded=sum(a.succeeded for a in attempts),
        decided=sum(a.status != IN_FLIGHT for a in attempts),
        collected_minor=sum(fold.collected.values()),
        reversed_minor=sum(fold.reversed.values()),
        refunded_minor=sum(fold.refunded.values()),
        outstanding_minor=now,
    )


def _channel_row(fold: _Fold, channel: str, attempts: list[_Attempt]) -> ChannelRow:
    mine = [a for a in attempts if a.channel == channel]
    return ChannelRow(
        channel=channel,
        attempts=len(mine),
        succeeded=sum(a.succeeded for a in mine),
        failed=sum(a.status == FAILED for a in mine),
        reversed=sum(a.status == REVERSED for a in mine),
        in_flight=sum(a.status == IN_FLIGHT for a in mine),
        unknowns_resolved=sum(a.resolved_unknown for a in mine),
        collected_minor=sum(v for (_, c), v in fold.collected.items() if c == channel),
        reversed_minor=sum(v for (_, c), v in fold.reversed.items() if c == channel),
        refunded_minor=fold.refunded.get(channel, 0),
    )


def _collections(fold: _Fold, channels: list[str]) -> Collections:
    dates = sorted({d for d, _ in fold.collected} | {d for d, _ in fold.reversed})
    return Collections(
        dates=tuple(dates),
        collected_minor={c: tuple(fold.collected.get((d, c), 0) for d in dates) for c in channels},
        reversed_minor={c: tuple(fold.reversed.get((d, c), 0) for d in dates) for c in channels},
    )


def _outstanding(fold: _Fold) -> Outstanding:
    dates = sorted({d for d, _ in fold.receivable_moves})
    series: dict[str, tuple[int, ...]] = {}
    for component in COMPONENTS:
        moves = [fold.receivable_moves.get((d, component), 0) for d in dates]
        series[component] = tuple(_running_sum(moves))
    return Outstanding(dates=tuple(dates), by_component_minor=series)


def _date_loans_never_closed(fold: _Fold) -> None:
    """A loan with no closed business day yet counts on the latest date, so the series ends at
    today's total; before any close at all, on the date its first event occurred."""
    latest = max(fold.loan_dates.values(), default=None)
    for (loan_id, component), amount in fold.undated_moves.items():
        fold.receivable_moves[(latest or fold.first_dates[loan_id], component)] += amount
    fold.undated_moves.clear()


def _running_sum(values: list[int]) -> list[int]:
    total, sums = 0, []
    for value in values:
        total += value
        sums.append(total)
    return sums


def _outcomes(channel: str, attempts: list[_Attempt]) -> ChannelOutcomes:
    mine = [a for a in attempts if a.channel == channel]
    codes: dict[str, int] = defaultdict(int)
    for attempt in mine:
        if attempt.status == FAILED:
            codes[attempt.code] += 1
    return ChannelOutcomes(
        channel=channel,
        succeeded=sum(a.status == SUCCEEDED for a in mine),
        reversed=sum(a.status == REVERSED for a in mine),
        failed_by_code=dict(sorted(codes.items())),
        in_flight=sum(a.status == IN_FLIGHT for a in mine),
    )


def settlement(durations_ms: Iterable[int]) -> Settlement:
    ordered = tuple(sorted(durations_ms))
    if not ordered:
        return Settlement(durations_ms=(), percentiles_ms={})
    return Settlement(
        durations_ms=ordered, percentiles_ms={p: nearest_rank(ordered, p) for p in PERCENTILES}
    )


def nearest_rank(ordered: tuple[int, ...], percentile: int) -> int:
    """The smallest value with at least `percentile` % of the values at or below it."""
    rank = max(1, (percentile * len(ordered) + 99) // 100)
    return ordered[rank - 1]


def format_yuan(amount_minor: int) -> str:
    """Fen as yuan with thousands separators: 123456789 -> '¥1,234,567.89'."""
    text = format_minor(amount_minor, "CNY")
    return f"-¥{text[1:]}" if text.startswith("-") else f"¥{text}"


def format_timestamp(timestamp_ms: int) -> str:
    """A Kafka timestamp as UTC text, to the second."""
    moment = datetime.fromtimestamp(timestamp_ms // 1000, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def duration_unit(longest_ms: int) -> tuple[int, str]:
    """The unit to show durations up to `longest_ms` in: (milliseconds per unit, its symbol)."""
    for limit, divisor, unit in (
        (1_000, 1, "ms"),
        (120_000, 1_000, "s"),
        (7_200_000, 60_000, "min"),
    ):
        if longest_ms < limit:
            return divisor, unit
    return 3_600_000, "h"


def format_duration(milliseconds: int) -> str:
    """'850 ms', '1.9 s', '4.5 min', '2.0 h': one decimal above a second."""
    divisor, unit = duration_unit(abs(milliseconds))
    return f"{milliseconds} ms" if divisor == 1 else f"{milliseconds / divisor:.1f} {unit}"
