"""The gateway's rules: the open channel work folded from events, and the next step after an answer.

Pure. The gateway in `streams/` performs the HTTP calls and sends the reports these functions
return; everything it decides is decided here:
- every (re)submission is preceded by a query, and a resubmission happens only on "no such order",
  always with the attempt's one order id, so the channel deduplicates whatever we repeat;
- a timeout or an error is reported as "outcome unknown" and polled, never turned into a failure;
- every report has a deterministic command id, so a report repeated after a crash or by another
  gateway instance is a duplicate at the decider, never a second effect.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Literal

from ledger.sequence import SeqTracker, Verdict
from schemas.commands import (
    ChannelAnswer,
    FlagStuckAttempt,
    ReportChannelFailure,
    ReportChannelProcessing,
    ReportChannelSuccess,
    ReportOrderNotFound,
    ReportOutcomeUnknown,
    ReportRefundFailure,
    ReportRefundSuccess,
    RequestRepayment,
    Source,
)
from schemas.events import (
    AutoDebitDue,
    DeductionFailed,
    DeductionOutcomeUnknown,
    DeductionProcessing,
    DeductionResubmissionRequested,
    DeductionStarted,
    DeductionStuck,
    DeductionSucceeded,
    Event,
    RefundFailed,
    RefundStarted,
    RefundSucceeded,
)

# ---- the open work ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DebitWork:
    """An attempt in flight: what the channel call needs, and what the log says happened."""

    loan_id: str
    attempt_id: str  # also the channel order id
    channel: str
    amount_minor: int
    currency: str
    account_ref: str
    business_date: date
    started_ms: int  # Kafka timestamp of DeductionStarted: the decider's clock, not the caller's
    last_activity_ms: int
    start_offset: int
    submission: int = 1
    # The log shows that this submission may have reached the channel (it answered "processing",
    # or a call of ours hit trouble): a "no such order" is then news worth recording.
    tried: bool = False
    reported: frozenset[str] = frozenset()  # kinds reported for this submission
    stuck_flagged: bool = False

    @property
    def key(self) -> str:
        return self.attempt_id


@dataclass(frozen=True, slots=True)
class RefundWork:
    loan_id: str
    refund_id: str
    order_id: str
    channel: str
    amount_minor: int
    currency: str
    account_ref: str
    started_ms: int
    last_activity_ms: int
    start_offset: int

    @property
    def key(self) -> str:
        return self.refund_id


Work = DebitWork | RefundWork
# What evolves an attempt's work; the events the gateway does not care about change nothing.
WORK_EVENT_TYPES = frozenset(
    {
        "DeductionStarted",
        "DeductionProcessing",
        "DeductionOutcomeUnknown",
        "DeductionResubmissionRequested",
        "DeductionStuck",
        "DeductionSucceeded",
        "DeductionFailed",
        "RefundStarted",
        "RefundSucceeded",
        "RefundFailed",
    }
)


class OpenWork:
    """The open work of one partition of `ledger.events`, folded in offset order."""

    def __init__(self) -> None:
        self.items: dict[str, Work] = {}
        # Starts written before events carried currency and business date: no channel call can
        # be made from them; the shell reports them for an operator.
        self.unusable: list[str] = []
        # The seq rule's repeat half (ledger.sequence): the gateway starts mid-log and folds
        # only the events that open or move work, so it cannot see a gap. A decider that lost
        # its partitions but not yet its process (a frozen worker under at_least_once) writes
        # byte-identical repeats of older events after newer ones: a repeated start read after
        # its attempt closed reopened it, and the gateway then reported a success the ledger had
        # long posted, for ever (chaos run, 2026-12-02: 49 attempts).
        self.seqs = SeqTracker(partial=True)

    def apply(self, event: Event, offset: int, timestamp_ms: int) -> str | None:
        """Fold one event; the key of the work it opened or moved on, or None (also for a
        repeat)."""
        if self.seqs.admit(event.loan_id, event.seq) is not Verdict.NEXT:
            return None
        match event:
            case DeductionStarted():
                return self._open(event, _debit_work(event, offset, timestamp_ms))
            case RefundStarted():
                return self._open(event, _refund_work(event, offset, timestamp_ms))
            case DeductionSucceeded() | DeductionFailed():
                return self._close(event.attempt_id)
            case RefundSucceeded() | RefundFailed():
                return self._close(event.refund_id)
            case (
                DeductionProcessing()
                | DeductionOutcomeUnknown()
                | DeductionResubmissionRequested()
                | DeductionStuck()
            ):
                return self._move_on(event, timestamp_ms)
        return None

    def low_watermark(self, next_offset: int) -> int:
        """The offset to commit: re-reading from there rebuilds every piece of open work."""
        return min((work.start_offset for work in self.items.values()), default=next_offset)

    def _open(self, event: DeductionStarted | RefundStarted, work: Work | None) -> str | None:
        if work is None:
            self.unusable.append(event.event_id)
            return None
        self.items.setdefault(work.key, work)
        return work.key

    def _close(self, key: str) -> str | None:
        return key if self.items.pop(key, None) is not None else None

    def _move_on(
        self,
        event: DeductionProcessing
        | DeductionOutcomeUnknown
        | DeductionResubmissionRequested
        | DeductionStuck,
        timestamp_ms: int,
    ) -> str | None:
        work = self.items.get(event.attempt_id)
        if not isinstance(work, DebitWork):
            return None
        moved = _debit_after_event(work, event)
        self.items[work.key] = replace(moved, last_activity_ms=timestamp_ms)
        return work.key


def _debit_work(event: DeductionStarted, offset: int, timestamp_ms: int) -> DebitWork | None:
    if event.currency is None or event.business_date is None:
        return None
    return DebitWork(
        loan_id=event.loan_id,
        attempt_id=event.attempt_id,
        channel=event.channel,
        amount_minor=event.amount_minor,
        currency=event.currency,
        account_ref=event.debit_account_ref,
        business_date=event.business_date,
        started_ms=timestamp_ms,
        last_activity_ms=timestamp_ms,
        start_offset=offset,
    )


def _refund_work(event: RefundStarted, offset: int, timestamp_ms: int) -> RefundWork | None:
    if event.currency is None:
        return None
    return RefundWork(
        loan_id=event.loan_id,
        refund_id=event.refund_id,
        order_id=event.order_id,
        channel=event.channel,
        amount_minor=event.amount_minor,
        currency=event.currency,
        account_ref=event.debit_account_ref,
        started_ms=timestamp_ms,
        last_activity_ms=timestamp_ms,
        start_offset=offset,
    )


def _debit_after_event(
    work: DebitWork,
    event: DeductionProcessing
    | DeductionOutcomeUnknown
    | DeductionResubmissionRequested
    | DeductionStuck,
) -> DebitWork:
    match event:
        case DeductionProcessing():
            return replace(work, tried=True, reported=work.reported | {PROCESSING})
        case DeductionOutcomeUnknown():
            return replace(work, tried=True, reported=work.reported | {UNKNOWN})
        case DeductionResubmissionRequested():
            return _next_submission(work, event.submission)
        case DeductionStuck():
            return replace(work, stuck_flagged=True)


def _next_submission(work: DebitWork, submission: int) -> DebitWork:
    # Nothing is known yet about the new submission: it has not been tried.
    if submission <= work.submission:
        return work
    return replace(work, submission=submission, tried=False, reported=frozenset())


# ---- what the channel said -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Succeeded:
    channel_reference: str
    amount_minor: int


@dataclass(frozen=True, slots=True)
class Failed:
    code: str
    retriable: bool


@dataclass(frozen=True, slots=True)
class Processing:
    pass


@dataclass(frozen=True, slots=True)
class NotFound:
    pass


@dataclass(frozen=True, slots=True)
class NoAnswer:
    """A timeout, a 5xx, a dropped connection: the debit may or may not have happened."""

    detail: Literal["timeout", "error"]


Answer = Succeeded | Failed | Processing | NotFound | NoAnswer
PROCESSING = "processing"
UNKNOWN = "unknown"


class Then(StrEnum):
    SUBMIT = "submit"  # call the channel with the attempt's order id
    POLL = "poll"  # wait (backing off), then query
    DONE = "done"  # the final answer is reported; the decider's event closes the work


@dataclass(frozen=True, slots=True)
class Step:
    reports: tuple[ChannelAnswer, ...]
    then: Then
    work: DebitWork  # the work as it will be once the reports are decided


def after_query(work: DebitWork, answer: Answer, now: datetime) -> Step:
    match answer:
        case NotFound() if work.tried:
            # The order never arrived: record it, then submit again with the SAME order id.
            report = ReportOrderNotFound(**_envelope(work, f"notfound:{work.submission}", now))
            return Step((report,), Then.SUBMIT, _next_submission(work, work.submission + 1))
        case NotFound():
            return Step((), Then.SUBMIT, work)
        case NoAnswer():
            # A query that went unanswered tells the ledger nothing new: ask again later.
            return Step((), Then.POLL, work)
    return _heard(work, answer, now)


def after_submit(work: DebitWork, answer: Answer, now: datetime) -> Step:
    match answer:
        case NoAnswer(detail=detail):
            # Never a failure: the card may have been debited. Record it and find out.
            return _report_once(work, UNKNOWN, now, detail)
        case NotFound():
            # A channel that loses the order it was just given: the query will tell.
            return Step((), Then.POLL, replace(work, tried=True))
    return _heard(work, answer, now)


def _heard(work: DebitWork, answer: Succeeded | Failed | Processing, now: datetime) -> Step:
    match answer:
        case Succeeded(channel_reference=reference, amount_minor=amount):
            success = ReportChannelSuccess(
                **_envelope(work, "ok", now), channel_reference=reference, amount_minor=amount
            )
            return Step((success,), Then.DONE, work)
        case Failed(code=code, retriable=retriable):
            failure = ReportChannelFailure(
                **_envelope(work, "failed", now), code=code, retriable=retriable
            )
            return Step((failure,), Then.DONE, work)
        case Processing():
            return _report_once(work, PROCESSING, now)


def _report_once(
    work: DebitWork, kind: str, now: datetime, detail: Literal["timeout", "error"] = "timeout"
) -> Step:
    moved = replace(work, tried=True, reported=work.reported | {kind})
    if kind in work.reported:
        return Step((), Then.POLL, moved)
    # The detail is part of the id: two gateways that heard differently (timeout, error) for
    # one submission each record a fact, rather than one of them an idempotency conflict.
    suffix = (
        f"{kind}:{work.submission}" if kind == PROCESSING else f"{kind}:{work.submission}:{detail}"
    )
    envelope = _envelope(work, suffix, now)
    report: ChannelAnswer = (
        ReportChannelProcessing(**envelope)
        if kind == PROCESSING
        else ReportOutcomeUnknown(**envelope, detail=detail)
    )
    return Step((report,), Then.POLL, moved)


def _envelope(work: DebitWork, suffix: str, now: datetime) -> dict[str, Any]:
    return {
        "command_id": f"gw:{work.attempt_id}:{suffix}",
        "loan_id": work.loan_id,
        "issued_at": now,
        "attempt_id": work.attempt_id,
    }


# ---- the sweeper, the stuck check and refunds ------------------------------------------------


def stuck_flag(work: DebitWork, now: datetime) -> FlagStuckAttempt:
    """The alert for an attempt in flight longer than the alert age (see `is_stuck`)."""
    return FlagStuckAttempt(**_envelope(work, "stuck", now))


def is_stuck(work: DebitWork, now_ms: int, alert_age_ms: int) -> bool:
    return now_ms - work.started_ms >= alert_age_ms


def needs_takeover(work: Work, now_ms: int, takeover_age_ms: int) -> bool:
    """Nothing has happened to it for the takeover age: whoever worked on it is gone."""
    return now_ms - work.last_activity_ms >= takeover_age_ms


def refund_succeeded(
    work: RefundWork, channel_reference: str, now: datetime
) -> ReportRefundSuccess:
    return ReportRefundSuccess(
        command_id=f"gw:{work.refund_id}:refunded",
        loan_id=work.loan_id,
        issued_at=now,
        refund_id=work.refund_id,
        channel_reference=channel_reference,
    )


def refund_refused(work: RefundWork, code: str, now: datetime) -> ReportRefundFailure:
    return ReportRefundFailure(
        command_id=f"gw:{work.refund_id}:refund-failed",
        loan_id=work.loan_id,
        issued_at=now,
        refund_id=work.refund_id,
        code=code,
    )


# ---- the auto-debit job ----------------------------------------------------------------------

AUTO_DEBIT_JOB = "auto-debit-job"


def auto_debit_request(event: AutoDebitDue, now: datetime) -> RequestRepayment:
    """The scheduled door: the request the loan asked for, under the id it chose, so sending it
    again (a rerun, a crash) is a duplicate."""
    return RequestRepayment(
        command_id=event.request_command_id,
        loan_id=event.loan_id,
        issued_at=now,
        source=Source.AUTO_DEBIT,
        requested_by=AUTO_DEBIT_JOB,
        installments=event.installments,
    )
