"""The gateway's pure rules (docs/design.md): the open work folded from the log, and the next
step after each channel answer.

Every event comes from the pure core, and every report the rules emit is decided by it: the rules
and the decider are checked to speak the same language, not each against a hand-made copy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

import hypothesis
import pytest
from hypothesis import settings
from hypothesis import strategies as st

from ledger import LoanState
from ledger.channel_work import (
    AUTO_DEBIT_JOB,
    PROCESSING,
    UNKNOWN,
    Answer,
    DebitWork,
    Failed,
    NoAnswer,
    NotFound,
    OpenWork,
    Processing,
    RefundWork,
    Step,
    Succeeded,
    Then,
    after_query,
    after_submit,
    auto_debit_request,
    is_stuck,
    needs_takeover,
    refund_refused,
    refund_succeeded,
    stuck_flag,
)
from ledger.identity import attempt_id
from ledger.state import AttemptStatus, RefundStatus
from schemas.commands import (
    ChannelAnswer,
    Command,
    ReportChannelFailure,
    ReportChannelProcessing,
    ReportChannelSuccess,
    ReportOrderNotFound,
    ReportOutcomeUnknown,
    RequestRepayment,
    Source,
)
from schemas.events import (
    AutoDebitDue,
    DeductionOutcomeUnknown,
    DeductionProcessing,
    DeductionResubmissionRequested,
    DeductionStarted,
    DeductionStuck,
    Event,
    RefundStarted,
)
from schemas.outcomes import OutcomeStatus
from tests.support.builders import (
    FIRST_DUE,
    LOAN,
    at,
    close_day,
    duplicate_debit,
    failure,
    fold,
    given,
    history,
    open_loan,
    order_not_found,
    outcome_unknown,
    processing,
    refund_failure,
    refund_success,
    request,
    started,
    stuck,
    success,
    when,
)

OTHER_LOAN = "L2"
ATTEMPT = attempt_id(LOAN, "r1", 0)
OTHER_ATTEMPT = attempt_id(OTHER_LOAN, "r1", 0)
DUE = (open_loan(), close_day(FIRST_DUE))
DUE_AMOUNT = given(*DUE).installments[0].owed_minor
# A statement's second debit of the order: it starts the refund of those 500 to the same card.
REFUNDED = duplicate_debit("dup-1", ATTEMPT, 500)
NOW = at(30)
# Kafka's clock, deliberately far from the events' `occurred_at`: the work must take this one.
START_MS = 1_800_000_000_000
START_OFFSET = 40
SECOND_MS = 1_000
LATER_MS = START_MS + 5 * SECOND_MS
STUCK_ALERT_AGE_MS = 60 * 60 * SECOND_MS
TAKEOVER_AGE_MS = 3 * 60 * SECOND_MS
ACCEPTED_OR_DUPLICATE = {OutcomeStatus.ACCEPTED, OutcomeStatus.DUPLICATE}


def in_flight(loan_id: str = LOAN) -> tuple[LoanState, DeductionStarted]:
    """Installment 1 fell due and r1 asked for it: the state with the attempt in flight, and the
    DeductionStarted the gateway reads."""
    state = given(
        open_loan(loan_id=loan_id), close_day(FIRST_DUE, loan_id=loan_id), loan_id=loan_id
    )
    decision = when(state, request("r1", loan_id=loan_id))
    return fold(state, decision.events), started(decision)


IN_FLIGHT, START = in_flight()
FRESH = DebitWork(
    loan_id=LOAN,
    attempt_id=ATTEMPT,
    channel="alpha",
    amount_minor=DUE_AMOUNT,
    currency="CNY",
    account_ref=START.debit_account_ref,
    business_date=FIRST_DUE,
    started_ms=START_MS,
    last_activity_ms=START_MS,
    start_offset=START_OFFSET,
)


def decided(state: LoanState, *commands: Command) -> tuple[LoanState, tuple[Event, ...]]:
    """Decide `commands` in order, each of which must be accepted: the state and their events."""
    events: list[Event] = []
    for command in commands:
        decision = when(state, command)
        assert decision.outcome.status is OutcomeStatus.ACCEPTED, (command, decision.outcome)
        state = fold(state, decision.events)
        events.extend(decision.events)
    return state, tuple(events)


def opened() -> OpenWork:
    """The gateway's fold after reading START at START_OFFSET, stamped START_MS by Kafka."""
    open_work = OpenWork()
    open_work.apply(START, START_OFFSET, START_MS)
    return open_work


def read(
    open_work: OpenWork,
    events: Sequence[Event],
    from_offset: int = START_OFFSET + 1,
    timestamp_ms: int = LATER_MS,
) -> list[str | None]:
    """Fold `events` as the next records of the partition; what each `apply` returned."""
    return [
        open_work.apply(event, from_offset + index, timestamp_ms)
        for index, event in enumerate(events)
    ]


def debit(open_work: OpenWork, key: str = ATTEMPT) -> DebitWork:
    work = open_work.items[key]
    assert isinstance(work, DebitWork), work
    return work


def refund_started(events: Sequence[Event]) -> RefundStarted:
    (found,) = [event for event in events if isinstance(event, RefundStarted)]
    return found


def gateway_envelope(suffix: str) -> dict[str, Any]:
    return {
        "command_id": f"gw:{ATTEMPT}:{suffix}",
        "loan_id": LOAN,
        "issued_at": NOW,
        "attempt_id": ATTEMPT,
    }


@dataclass
class Ledger:
    """The decider and the gateway's fold of its log side by side: reports in, events folded
    into both the loan's state and the open work, at the next offsets of the partition."""

    state: LoanState = IN_FLIGHT
    open_work: OpenWork = field(default_factory=opened)
    next_offset: int = START_OFFSET + 1

    def decide(self, command: Command) -> OutcomeStatus:
        decision = when(self.state, command)
        self.state = fold(self.state, decision.events)
        read(self.open_work, decision.events, self.next_offset)
        self.next_offset += len(decision.events)
        return decision.outcome.status

    def attempt_status(self) -> AttemptStatus:
        attempt = self.state.attempt(ATTEMPT)
        assert attempt is not None
        return attempt.status


# ---- the open work: starts ---------------------------------------------------------------


def test_a_deduction_start_opens_debit_work_stamped_with_the_kafka_timestamp() -> None:
    open_work = OpenWork()

    key = open_work.apply(START, offset=START_OFFSET, timestamp_ms=START_MS)

    assert (key, open_work.items, open_work.unusable) == (ATTEMPT, {ATTEMPT: FRESH}, [])
    assert START.occurred_at.timestamp() * 1000 != START_MS  # the decider's stamp, not the event's


def test_reading_a_start_again_keeps_what_was_folded_since() -> None:
    open_work = opened()
    read(open_work, decided(IN_FLIGHT, processing("p1", ATTEMPT))[1])
    folded = debit(open_work)

    assert open_work.apply(START, START_OFFSET + 9, START_MS) is None
    assert debit(open_work) == folded


def test_a_start_repeated_after_its_attempt_succeeded_does_not_reopen_it() -> None:
    """Chaos run, 2026-12-02: a frozen decider woke and wrote repeats of a loan's events after
    the new owner had posted the attempt's success; the gateway reopened the attempt and
    reported that success for ever (answered `duplicate`, so nothing closed it again)."""
    open_work = opened()
    _, events = decided(IN_FLIGHT, success("s1", ATTEMPT, DUE_AMOUNT))
    read(open_work, events)

    late = read(open_work, [START, *events], from_offset=START_OFFSET + 5)

    assert (late, open_work.items) == ([None, None], {})


def test_repeats_of_events_already_folded_change_nothing() -> None:
    open_work = opened()
    _, moved = decided(IN_FLIGHT, processing("p1", ATTEMPT))
    read(open_work, moved)
    folded = dict(open_work.items)

    assert read(open_work, [START, *moved], from_offset=START_OFFSET + 5) == [None, None]
    assert open_work.items == folded


@pytest.mark.parametrize("field_name", ["currency", "business_date"])
def test_a_start_written_without_currency_or_business_date_is_unusable_not_open_work(
    field_name: str,
) -> None:
    legacy = START.model_copy(update={field_name: None})
    open_work = OpenWork()

    key = open_work.apply(legacy, START_OFFSET, START_MS)

    assert (key, open_work.items, open_work.unusable) == (None, {}, [START.event_id])
    assert open_work.low_watermark(START_OFFSET + 1) == START_OFFSET + 1


def test_a_refund_start_opens_refund_work_for_the_order_to_refund() -> None:
    _, events = history(*DUE, request("r1"), success("s1", ATTEMPT, DUE_AMOUNT), REFUNDED)
    start = refund_started(events)
    open_work = OpenWork()

    key = open_work.apply(start, offset=70, timestamp_ms=START_MS)

    assert (key, open_work.items) == (
        start.refund_id,
        {
            start.refund_id: RefundWork(
                loan_id=LOAN, refund_id=start.refund_id, order_id=ATTEMPT, channel="alpha",
                amount_minor=500, currency="CNY", account_ref=start.debit_account_ref,
                started_ms=START_MS, last_activity_ms=START_MS, start_offset=70,
            )
        },
    )  # fmt: skip


def test_a_refund_start_without_currency_is_unusable() -> None:
    _, events = history(*DUE, request("r1"), success("s1", ATTEMPT, DUE_AMOUNT), REFUNDED)
    legacy = refund_started(events).model_copy(update={"currency": None})
    open_work = OpenWork()

    assert open_work.apply(legacy, 70, START_MS) is None
    assert (open_work.items, open_work.unusable) == ({}, [legacy.event_id])


# ---- the open work: what moves it on and what closes it -----------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        success("s1", ATTEMPT, DUE_AMOUNT),
        failure("f1", ATTEMPT, "card_expired", retriable=False),
    ],
    ids=["succeeded", "failed"],
)
def test_a_definite_outcome_closes_the_debit_work(answer: Command) -> None:
    open_work = opened()

    keys = read(open_work, decided(IN_FLIGHT, answer)[1])

    assert (keys, open_work.items) == ([ATTEMPT], {})


def test_a_retriable_failure_closes_the_attempt_and_opens_the_backup_channels() -> None:
    open_work = opened()
    _, events = decided(IN_FLIGHT, failure("f1", ATTEMPT, "channel_down", retriable=True))
    backup = attempt_id(LOAN, "f1", 1)

    assert read(open_work, events) == [ATTEMPT, backup]
    assert list(open_work.items) == [backup]
    assert (debit(open_work, backup).channel, debit(open_work, backup).start_offset) == (
        "beta",
        START_OFFSET + 2,
    )


@pytest.mark.parametrize(
    "answer_for",
    [
        lambda refund: refund_success("rs1", refund),
        lambda refund: refund_failure("rf1", refund),
    ],
    ids=["refunded", "refused"],
)
def test_a_refund_answer_closes_the_refund_work(answer_for: Callable[[str], Command]) -> None:
    state, events = history(*DUE, request("r1"), success("s1", ATTEMPT, DUE_AMOUNT), REFUNDED)
    start = refund_started(events)
    open_work = OpenWork()
    open_work.apply(start, 70, START_MS)

    keys = read(open_work, decided(state, answer_for(start.refund_id))[1], from_offset=71)

    assert (keys, open_work.items) == ([start.refund_id], {})


@pytest.mark.parametrize(
    ("report", "kind"),
    [(processing("p1", ATTEMPT), PROCESSING), (outcome_unknown("u1", ATTEMPT), UNKNOWN)],
    ids=["processing", "outcome-unknown"],
)
def test_processing_or_outcome_unknown_marks_the_submission_tried_and_reported(
    report: Command, kind: str
) -> None:
    open_work = opened()

    keys = read(open_work, decided(IN_FLIGHT, report)[1])

    assert keys == [ATTEMPT]
    assert debit(open_work) == replace(
        FRESH, tried=True, reported=frozenset({kind}), last_activity_ms=LATER_MS
    )


def test_a_resubmission_starts_a_new_untried_submission() -> None:
    open_work = opened()
    _, events = decided(
        IN_FLIGHT,
        processing("p1", ATTEMPT),
        outcome_unknown("u1", ATTEMPT),
        order_not_found("n1", ATTEMPT),
    )

    read(open_work, events)

    assert [type(event) for event in events] == [
        DeductionProcessing,
        DeductionOutcomeUnknown,
        DeductionResubmissionRequested,
    ]
    assert debit(open_work) == replace(FRESH, submission=2, last_activity_ms=LATER_MS)


def test_a_stuck_flag_is_remembered_so_it_is_not_raised_again() -> None:
    open_work = opened()

    read(open_work, decided(IN_FLIGHT, stuck("st1", ATTEMPT))[1])

    assert debit(open_work) == replace(FRESH, stuck_flagged=True, last_activity_ms=LATER_MS)


def test_events_of_other_loans_attempts_and_kinds_change_nothing() -> None:
    open_work = opened()
    other_state, other_start = in_flight(OTHER_LOAN)
    _, other_events = decided(
        other_state,
        processing("p1", OTHER_ATTEMPT, loan_id=OTHER_LOAN),
        outcome_unknown("u1", OTHER_ATTEMPT, loan_id=OTHER_LOAN),
        order_not_found("n1", OTHER_ATTEMPT, loan_id=OTHER_LOAN),
        stuck("st1", OTHER_ATTEMPT, loan_id=OTHER_LOAN),
        success("s1", OTHER_ATTEMPT, other_start.amount_minor, loan_id=OTHER_LOAN),
    )
    _, unrelated = decided(IN_FLIGHT, close_day(FIRST_DUE.replace(day=2)))

    keys = read(open_work, [*other_events, *unrelated])

    assert set(keys) == {None}
    assert (open_work.items, open_work.unusable) == ({ATTEMPT: FRESH}, [])


def test_the_low_watermark_is_the_earliest_start_of_open_work_else_the_position() -> None:
    open_work = OpenWork()
    assert open_work.low_watermark(12) == 12

    other_state, other_start = in_flight(OTHER_LOAN)
    open_work.apply(START, START_OFFSET, START_MS)
    open_work.apply(other_start, 55, START_MS)
    assert open_work.low_watermark(90) == START_OFFSET

    read(open_work, decided(IN_FLIGHT, success("s1", ATTEMPT, DUE_AMOUNT))[1], from_offset=60)
    assert open_work.low_watermark(90) == 55

    other_success = success("s1", OTHER_ATTEMPT, other_start.amount_minor, loan_id=OTHER_LOAN)
    read(open_work, decided(other_state, other_success)[1], from_offset=61)
    assert open_work.low_watermark(90) == 90


# ---- the next step after a channel answer -----------------------------------------------


def test_no_such_order_before_any_try_submits_without_a_report() -> None:
    assert after_query(FRESH, NotFound(), NOW) == Step((), Then.SUBMIT, FRESH)


def test_no_such_order_after_a_try_is_reported_and_the_next_submission_is_sent() -> None:
    ledger = Ledger()
    ledger.decide(processing("p1", ATTEMPT))
    tried = debit(ledger.open_work)

    step = after_query(tried, NotFound(), NOW)

    assert step == Step(
        (ReportOrderNotFound(**gateway_envelope("notfound:1")),),
        Then.SUBMIT,
        replace(tried, submission=2, tried=False, reported=frozenset()),
    )
    assert ledger.decide(step.reports[0]) is OutcomeStatus.ACCEPTED
    assert debit(ledger.open_work).submission == 2


@pytest.mark.parametrize("detail", ["timeout", "error"])
def test_a_submit_without_answer_is_reported_once_as_outcome_unknown_and_polled(
    detail: Literal["timeout", "error"],
) -> None:
    ledger = Ledger()

    first = after_submit(FRESH, NoAnswer(detail), NOW)
    second = after_submit(first.work, NoAnswer("timeout"), NOW)

    assert first == Step(
        (ReportOutcomeUnknown(**gateway_envelope(f"unknown:1:{detail}"), detail=detail),),
        Then.POLL,
        replace(FRESH, tried=True, reported=frozenset({UNKNOWN})),
    )
    assert second == Step((), Then.POLL, first.work)
    assert ledger.decide(first.reports[0]) is OutcomeStatus.ACCEPTED
    assert ledger.attempt_status() is AttemptStatus.DEDUCTING  # never a failure


def test_processing_is_reported_once_per_submission() -> None:
    ledger = Ledger()

    first = after_query(FRESH, Processing(), NOW)
    again = after_query(first.work, Processing(), NOW)
    resubmitted = after_query(again.work, NotFound(), NOW)
    on_second = after_submit(resubmitted.work, Processing(), NOW)

    assert [(step.reports, step.then) for step in (first, again, resubmitted, on_second)] == [
        ((ReportChannelProcessing(**gateway_envelope("processing:1")),), Then.POLL),
        ((), Then.POLL),
        ((ReportOrderNotFound(**gateway_envelope("notfound:1")),), Then.SUBMIT),
        ((ReportChannelProcessing(**gateway_envelope("processing:2")),), Then.POLL),
    ]
    for step in (first, resubmitted, on_second):
        assert ledger.decide(step.reports[0]) is OutcomeStatus.ACCEPTED


StepRule = Callable[[DebitWork, Answer, datetime], Step]


@pytest.mark.parametrize("rule", [after_query, after_submit], ids=["query", "submit"])
def test_a_success_is_reported_with_the_channel_reference_and_amount_and_is_done(
    rule: StepRule,
) -> None:
    ledger = Ledger()

    step = rule(FRESH, Succeeded("ch-ref-9", DUE_AMOUNT), NOW)

    assert step == Step(
        (
            ReportChannelSuccess(
                **gateway_envelope("ok"), channel_reference="ch-ref-9", amount_minor=DUE_AMOUNT
            ),
        ),
        Then.DONE,
        FRESH,
    )
    assert ledger.decide(step.reports[0]) is OutcomeStatus.ACCEPTED
    assert (ledger.attempt_status(), ledger.open_work.items) == (AttemptStatus.SUCCEEDED, {})


@pytest.mark.parametrize("rule", [after_query, after_submit], ids=["query", "submit"])
@pytest.mark.parametrize("retriable", [False, True])
def test_a_failure_is_reported_with_its_code_and_retriability_and_is_done(
    rule: StepRule, retriable: bool
) -> None:
    ledger = Ledger()

    step = rule(FRESH, Failed("insufficient_funds", retriable), NOW)

    assert step == Step(
        (
            ReportChannelFailure(
                **gateway_envelope("failed"), code="insufficient_funds", retriable=retriable
            ),
        ),
        Then.DONE,
        FRESH,
    )
    assert ledger.decide(step.reports[0]) is OutcomeStatus.ACCEPTED
    assert ledger.attempt_status() is AttemptStatus.FAILED
    assert ATTEMPT not in ledger.open_work.items


@pytest.mark.parametrize("work", [FRESH, replace(FRESH, tried=True)], ids=["untried", "tried"])
@pytest.mark.parametrize("detail", ["timeout", "error"])
def test_an_unanswered_query_is_polled_again_without_a_report(
    work: DebitWork, detail: Literal["timeout", "error"]
) -> None:
    assert after_query(work, NoAnswer(detail), NOW) == Step((), Then.POLL, work)


def test_an_order_lost_right_after_its_submission_is_polled_not_resubmitted() -> None:
    assert after_submit(FRESH, NotFound(), NOW) == Step((), Then.POLL, replace(FRESH, tried=True))


# ---- the gateway's loop, for any answers the channels give ----------------------------------

PENDING: st.SearchStrategy[Answer] = st.one_of(
    st.just(Processing()),
    st.just(NotFound()),
    st.builds(NoAnswer, st.sampled_from(["timeout", "error"])),
)
FINAL: st.SearchStrategy[Answer] = st.one_of(
    st.builds(Succeeded, st.sampled_from(["ch-ref-1", "ch-ref-2"]), st.integers(1, 2 * DUE_AMOUNT)),
    st.builds(Failed, st.sampled_from(["card_expired", "insufficient_funds"]), st.booleans()),
)
# Long runs of pending answers, then a few of any kind: a final answer ends the loop wherever
# it comes, so putting them at the end loses nothing and keeps the runs long.
ANSWERS: st.SearchStrategy[list[Answer]] = st.tuples(
    st.lists(PENDING, max_size=30), st.lists(st.one_of(PENDING, FINAL), max_size=4)
).map(lambda halves: [*halves[0], *halves[1]])


@dataclass(frozen=True, slots=True)
class Exchange:
    """One channel call of the loop: which call, what the channel said, the step that followed."""

    call: Literal["query", "submit"]
    answer: Answer
    step: Step


def drive(work: DebitWork, answers: Sequence[Answer], now: datetime = NOW) -> list[Exchange]:
    """The loop of `streams.gateway.service`: a query first; SUBMIT -> `after_submit`, POLL ->
    `after_query`; until DONE or the answers run out."""
    exchanges: list[Exchange] = []
    then = Then.POLL
    for answer in answers:
        if then is Then.DONE:
            break
        call: Literal["query", "submit"] = "submit" if then is Then.SUBMIT else "query"
        step = (after_submit if call == "submit" else after_query)(work, answer, now)
        exchanges.append(Exchange(call, answer, step))
        work, then = step.work, step.then
    return exchanges


def reports_of(exchanges: Sequence[Exchange]) -> list[ChannelAnswer]:
    return [report for exchange in exchanges for report in exchange.step.reports]


@settings(deadline=None)
@hypothesis.given(answers=ANSWERS)
def test_a_failure_is_reported_only_right_after_the_channel_said_failed(
    answers: list[Answer],
) -> None:
    for exchange in drive(FRESH, answers):
        if any(isinstance(report, ReportChannelFailure) for report in exchange.step.reports):
            assert isinstance(exchange.answer, Failed), exchange


@settings(deadline=None)
@hypothesis.given(answers=ANSWERS)
def test_a_submission_only_ever_follows_a_query_that_found_no_order(answers: list[Answer]) -> None:
    for exchange in drive(FRESH, answers):
        if exchange.step.then is Then.SUBMIT:
            assert (exchange.call, exchange.answer) == ("query", NotFound()), exchange


@settings(deadline=None)
@hypothesis.given(answers=ANSWERS)
def test_every_report_is_accepted_or_a_duplicate_and_the_log_agrees_with_the_step(
    answers: list[Answer],
) -> None:
    exchanges = drive(FRESH, answers)
    by_id: dict[str, set[str]] = {}
    for report in reports_of(exchanges):
        by_id.setdefault(report.command_id, set()).add(report.model_dump_json())
    assert all(len(payloads) == 1 for payloads in by_id.values()), by_id

    ledger = Ledger()
    for exchange in exchanges:
        for report in exchange.step.reports:
            assert ledger.decide(report) in ACCEPTED_OR_DUPLICATE, (report, exchange)
        # "the work as it will be once the reports are decided": the log's fold says the same.
        if exchange.step.then is Then.DONE:
            assert ATTEMPT not in ledger.open_work.items
        else:
            logged = debit(ledger.open_work)
            assert (logged.submission, logged.reported) == (
                exchange.step.work.submission,
                exchange.step.work.reported,
            )
    heard_failed = bool(exchanges) and isinstance(exchanges[-1].answer, Failed)
    assert (ledger.attempt_status() is AttemptStatus.FAILED) == heard_failed


@settings(deadline=None)
@hypothesis.given(first=ANSWERS, second=ANSWERS)
def test_a_gateway_taking_over_from_the_log_repeats_reports_only_as_duplicates(
    first: list[Answer], second: list[Answer]
) -> None:
    ledger = Ledger()
    first_run = reports_of(drive(FRESH, first))
    for report in first_run:
        assert ledger.decide(report) in ACCEPTED_OR_DUPLICATE, report
    resumed = ledger.open_work.items.get(ATTEMPT)
    hypothesis.assume(isinstance(resumed, DebitWork))
    assert isinstance(resumed, DebitWork)

    for report in reports_of(drive(resumed, second)):
        assert ledger.decide(report) in ACCEPTED_OR_DUPLICATE, report
    for report in first_run:  # resent after the crash
        assert ledger.decide(report) is OutcomeStatus.DUPLICATE, report


@settings(deadline=None)
@hypothesis.given(answers=ANSWERS)
def test_the_same_answers_give_byte_identical_reports(answers: list[Answer]) -> None:
    def encoded() -> list[bytes]:
        return [report.model_dump_json().encode() for report in reports_of(drive(FRESH, answers))]

    assert encoded() == encoded()


# ---- the sweeper, the stuck check and refunds --------------------------------------------


@pytest.mark.parametrize(
    ("age_ms", "expected"),
    [(STUCK_ALERT_AGE_MS - 1, False), (STUCK_ALERT_AGE_MS, True), (STUCK_ALERT_AGE_MS + 1, True)],
)
def test_an_attempt_is_stuck_from_the_alert_age_since_its_start(
    age_ms: int, expected: bool
) -> None:
    busy = replace(FRESH, last_activity_ms=START_MS + age_ms)  # activity does not make it young

    assert is_stuck(busy, START_MS + age_ms, STUCK_ALERT_AGE_MS) is expected


@pytest.mark.parametrize(
    ("idle_ms", "expected"),
    [(TAKEOVER_AGE_MS - 1, False), (TAKEOVER_AGE_MS, True), (TAKEOVER_AGE_MS + 1, True)],
)
def test_work_is_taken_over_once_idle_for_the_takeover_age(idle_ms: int, expected: bool) -> None:
    last_move = START_MS + STUCK_ALERT_AGE_MS  # long after the start: idleness counts, not age
    debit_work = replace(FRESH, last_activity_ms=last_move)
    refund_work = RefundWork(
        loan_id=LOAN, refund_id="refund-1", order_id=ATTEMPT, channel="alpha", amount_minor=500,
        currency="CNY", account_ref="acct-1", started_ms=START_MS, last_activity_ms=last_move,
        start_offset=70,
    )  # fmt: skip

    assert needs_takeover(debit_work, last_move + idle_ms, TAKEOVER_AGE_MS) is expected
    assert needs_takeover(refund_work, last_move + idle_ms, TAKEOVER_AGE_MS) is expected


def test_the_stuck_flag_is_accepted_once_and_marks_the_work() -> None:
    ledger = Ledger()
    flag = stuck_flag(FRESH, NOW)

    assert flag.command_id == f"gw:{ATTEMPT}:stuck"
    assert ledger.decide(flag) is OutcomeStatus.ACCEPTED
    assert debit(ledger.open_work).stuck_flagged
    assert ledger.decide(stuck_flag(FRESH, at(90))) is OutcomeStatus.DUPLICATE
    assert [type(event) for event in decided(IN_FLIGHT, flag)[1]] == [DeductionStuck]


@pytest.mark.parametrize(
    ("answer_for", "status"),
    [
        (lambda work: refund_succeeded(work, "refund-ref-1", NOW), RefundStatus.SUCCEEDED),
        (lambda work: refund_refused(work, "channel_rejected", NOW), RefundStatus.FAILED),
    ],
    ids=["refunded", "refused"],
)
def test_a_refund_report_is_accepted_and_closes_the_refund_work(
    answer_for: Callable[[RefundWork], Command], status: RefundStatus
) -> None:
    state, events = history(*DUE, request("r1"), success("s1", ATTEMPT, DUE_AMOUNT), REFUNDED)
    start = refund_started(events)
    open_work = OpenWork()
    open_work.apply(start, 70, START_MS)
    work = open_work.items[start.refund_id]
    assert isinstance(work, RefundWork)

    state, answered = decided(state, answer_for(work))
    read(open_work, answered, from_offset=71)

    assert (state.refunds[-1].status, open_work.items) == (status, {})
    assert when(state, answer_for(work)).outcome.status is OutcomeStatus.DUPLICATE


# ---- the auto-debit job ------------------------------------------------------------------


def test_the_auto_debit_job_asks_under_the_id_the_loan_chose_and_a_rerun_is_a_duplicate() -> None:
    state = given(open_loan())
    closing = when(state, close_day(FIRST_DUE))
    (due,) = [event for event in closing.events if isinstance(event, AutoDebitDue)]
    state = fold(state, closing.events)

    command = auto_debit_request(due, NOW)
    decision = when(state, command)

    assert command == RequestRepayment(
        command_id=due.request_command_id, loan_id=LOAN, issued_at=NOW,
        source=Source.AUTO_DEBIT, requested_by=AUTO_DEBIT_JOB, installments=(1,),
    )  # fmt: skip
    assert decision.outcome.status is OutcomeStatus.ACCEPTED
    start = started(decision)
    assert (start.source, start.installments, start.amount_minor) == (
        Source.AUTO_DEBIT,
        (1,),
        DUE_AMOUNT,
    )
    rerun = when(fold(state, decision.events), auto_debit_request(due, at(90)))
    assert rerun.outcome.status is OutcomeStatus.DUPLICATE
