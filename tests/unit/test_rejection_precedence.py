"""Refusals as values in the documented precedence, idempotency, and deterministic decisions."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest
from pydantic import ValidationError

from ledger import LoanState, Policy, initial_state
from ledger.identity import attempt_id, event_id, refund_id
from schemas.commands import Command, Source, parse_command
from schemas.events import encode_event, parse_event
from schemas.outcomes import OutcomeStatus, RejectionReason
from tests.support.builders import (
    FIRST_DUE,
    LOAN,
    after,
    at,
    beyond_the_refusal,
    close_day,
    duplicate_debit,
    failure,
    fold,
    given,
    refund_failure,
    refund_success,
    request,
    reversal,
    small_loan,
    success,
    unrecorded_success,
    when,
)

R = RejectionReason
ATTEMPT = attempt_id(LOAN, "r1", 0)
DUPLICATE_REFUND = refund_id(LOAN, "d1", 1)  # after its DuplicateDebitRecorded
MAR_10 = date(2026, 3, 10)

# ---- states -----------------------------------------------------------------------------------


def unopened() -> LoanState:
    return initial_state(LOAN)


def opened() -> LoanState:
    return given(small_loan())


def due() -> LoanState:
    """Installment 1 (103_500) fell due on Feb 1."""
    return given(small_loan(), close_day(FIRST_DUE))


def in_flight() -> LoanState:
    """Attempt ATTEMPT (request r1, app) for installment 1 is DEDUCTING."""
    return after(due(), request("r1"))


def succeeded() -> LoanState:
    return after(in_flight(), success("s1", ATTEMPT, 103_500))


def failed() -> LoanState:
    return after(in_flight(), failure("f1", ATTEMPT, "card_expired", retriable=False))


def first_paid() -> LoanState:
    """Installment 1 is paid; installment 2 has not fallen due; nothing in flight."""
    return after(due(), request("r1", installments=(1,)), success("s1", ATTEMPT, 103_500))


def first_paid_second_in_flight() -> LoanState:
    return after(first_paid(), request("r2", installments=(2,)))


def paid_off() -> LoanState:
    return after(due(), request("r1", installments=(1, 2, 3)), success("s1", ATTEMPT, 307_500))


def paid_off_with_backup_in_flight() -> LoanState:
    """The primary failed retriably (backup now DEDUCTING), then its late success paid it all."""
    state = after(
        due(),
        request("r1", installments=(1, 2, 3)),
        failure("f1", ATTEMPT, "channel_busy", retriable=True),
        success("s1", ATTEMPT, 307_500),
    )
    assert state.paid_off
    assert state.in_flight is not None
    return state


def duplicate_recorded() -> LoanState:
    """A duplicate debit (reference ch-ref-2) of the success is on the books, its refund pending."""
    return after(succeeded(), duplicate_debit("d1", ATTEMPT, 103_500, reference="ch-ref-2"))


def duplicate_refunded() -> LoanState:
    return after(
        succeeded(),
        duplicate_debit("d1", ATTEMPT, 500, reference="ch-ref-2"),
        refund_success("rf-1", DUPLICATE_REFUND),
    )


# ---- the table --------------------------------------------------------------------------------

Row = tuple[str, Callable[[], LoanState], Command, RejectionReason]

ROWS: list[Row] = [
    # 2. idempotency_conflict: checked against the loan's own record, so an unopened loan has none.
    ("conflict beats loan_exists", opened, small_loan(principal_minor=400_000),
     R.IDEMPOTENCY_CONFLICT),
    ("conflict beats deduction_in_progress", in_flight, request("r1", amount_minor=1_000),
     R.IDEMPOTENCY_CONFLICT),
    ("conflict beats nothing_due", succeeded, request("r1", Source.COLLECTION),
     R.IDEMPOTENCY_CONFLICT),
    ("conflict beats stale_business_date", due,
     close_day(date(2026, 1, 20), command_id="close-2026-02-01"), R.IDEMPOTENCY_CONFLICT),
    ("conflict beats attempt_settled", succeeded, success("s1", ATTEMPT, 99_999),
     R.IDEMPOTENCY_CONFLICT),
    # 3. unknown_loan / loan_exists
    ("unknown_loan: request", unopened, request("x"), R.UNKNOWN_LOAN),
    ("unknown_loan: close day", unopened, close_day(FIRST_DUE), R.UNKNOWN_LOAN),
    ("unknown_loan beats unknown_installment", unopened, request("x", installments=(99,)),
     R.UNKNOWN_LOAN),
    ("unknown_loan beats unknown_attempt", unopened, success("x", ATTEMPT, 100), R.UNKNOWN_LOAN),
    ("unknown_loan beats unknown_attempt: statement", unopened, reversal("x", ATTEMPT),
     R.UNKNOWN_LOAN),
    ("unknown_loan beats unknown_refund", unopened, refund_success("x", "rf"), R.UNKNOWN_LOAN),
    ("loan_exists", opened, small_loan("open-2"), R.LOAN_EXISTS),
    ("loan_exists on a paid-off loan", paid_off, small_loan("open-2"), R.LOAN_EXISTS),
    # 4. unknown_installment / unknown_attempt / unknown_refund / stale_business_date
    ("unknown_installment", due, request("x", installments=(4,)), R.UNKNOWN_INSTALLMENT),
    ("unknown_installment beats loan_closed", paid_off, request("x", installments=(4,)),
     R.UNKNOWN_INSTALLMENT),
    ("unknown_installment beats deduction_in_progress", in_flight,
     request("x", installments=(1, 4)), R.UNKNOWN_INSTALLMENT),
    ("unknown_installment beats amount_exceeds_due", due,
     request("x", installments=(4,), amount_minor=10**9), R.UNKNOWN_INSTALLMENT),
    ("unknown_attempt: channel answer", in_flight, success("x", "nope", 100), R.UNKNOWN_ATTEMPT),
    ("unknown_attempt: statement line", succeeded, reversal("x", "nope"), R.UNKNOWN_ATTEMPT),
    ("unknown_refund", succeeded, refund_success("x", "nope"), R.UNKNOWN_REFUND),
    ("stale_business_date: same day", due, close_day(FIRST_DUE, "close-again"),
     R.STALE_BUSINESS_DATE),
    ("stale_business_date: earlier day", due, close_day(date(2026, 1, 31)), R.STALE_BUSINESS_DATE),
    ("business_date_too_far_ahead: 32 days after the last", due, close_day(date(2026, 3, 5)),
     R.BUSINESS_DATE_TOO_FAR_AHEAD),
    ("business_date_too_far_ahead: never closed, 32 days after the first due date", opened,
     close_day(date(2026, 3, 5)), R.BUSINESS_DATE_TOO_FAR_AHEAD),
    ("business_date_too_far_ahead: a forged year", due, close_day(date(2099, 12, 31)),
     R.BUSINESS_DATE_TOO_FAR_AHEAD),
    # 5. loan_closed
    ("loan_closed", paid_off, request("x"), R.LOAN_CLOSED),
    ("loan_closed beats nothing_due", paid_off, request("x", installments=(1,)), R.LOAN_CLOSED),
    ("loan_closed beats deduction_in_progress", paid_off_with_backup_in_flight, request("x"),
     R.LOAN_CLOSED),
    # 6. deduction_in_progress
    ("deduction_in_progress", in_flight, request("x", Source.COLLECTION), R.DEDUCTION_IN_PROGRESS),
    ("deduction_in_progress beats nothing_due", first_paid_second_in_flight,
     request("x", installments=(1,)), R.DEDUCTION_IN_PROGRESS),
    ("deduction_in_progress beats amount_exceeds_due", in_flight, request("x", amount_minor=10**9),
     R.DEDUCTION_IN_PROGRESS),
    # 7. nothing_due
    ("nothing_due: nothing fell due yet", opened, request("x"), R.NOTHING_DUE),
    ("nothing_due: the named installment is paid", first_paid, request("x", installments=(1,)),
     R.NOTHING_DUE),
    ("nothing_due beats amount_exceeds_due", first_paid,
     request("x", installments=(1,), amount_minor=5), R.NOTHING_DUE),
    # 8. amount_exceeds_due
    ("amount_exceeds_due: everything due", due, request("x", amount_minor=103_501),
     R.AMOUNT_EXCEEDS_DUE),
    ("amount_exceeds_due: named installment", due,
     request("x", installments=(2,), amount_minor=102_501), R.AMOUNT_EXCEEDS_DUE),
    # 9. attempt_settled / attempt_not_succeeded / refund_settled
    ("attempt_settled: success after success", succeeded, success("x", ATTEMPT, 103_500),
     R.ATTEMPT_SETTLED),
    ("attempt_settled: failure after failure", failed,
     failure("x", ATTEMPT, "card_expired", retriable=False), R.ATTEMPT_SETTLED),
    ("attempt_settled: unrecorded success of a success", succeeded,
     unrecorded_success("x", ATTEMPT, 103_500), R.ATTEMPT_SETTLED),
    ("attempt_not_succeeded: reversal in flight", in_flight, reversal("x", ATTEMPT),
     R.ATTEMPT_NOT_SUCCEEDED),
    ("attempt_not_succeeded: duplicate debit of a failure", failed,
     duplicate_debit("x", ATTEMPT, 100), R.ATTEMPT_NOT_SUCCEEDED),
    ("refund_settled", duplicate_refunded, refund_failure("x", DUPLICATE_REFUND),
     R.REFUND_SETTLED),
    ("unknown_attempt: statement line of another channel", succeeded,
     reversal("x", ATTEMPT, channel="beta"), R.UNKNOWN_ATTEMPT),
    ("finding_already_recorded: the success's own reference", succeeded,
     duplicate_debit("x", ATTEMPT, 103_500, reference="ch-ref-1"), R.FINDING_ALREADY_RECORDED),
    ("finding_already_recorded: an earlier duplicate", duplicate_recorded,
     duplicate_debit("x", ATTEMPT, 103_500, reference="ch-ref-2"), R.FINDING_ALREADY_RECORDED),
]  # fmt: skip


@pytest.mark.parametrize(("name", "state", "command", "reason"), ROWS, ids=[r[0] for r in ROWS])
def test_rejection_precedence(
    name: str, state: Callable[[], LoanState], command: Command, reason: RejectionReason
) -> None:
    decision = when(state(), command)
    outcome = decision.outcome
    assert (outcome.status, outcome.reason, outcome.event_ids, beyond_the_refusal(decision)) == (
        OutcomeStatus.REJECTED,
        reason,
        (),
        (),
    )


def test_the_table_covers_every_reason_the_domain_returns() -> None:
    # invalid_command and loan_quarantined are the shell's: given for bytes that do not parse
    # as a command, and for a loan whose log has a gap (tests/unit/test_worker_stages.py).
    shells = {R.INVALID_COMMAND, R.LOAN_QUARANTINED}
    assert {row[3] for row in ROWS} == set(RejectionReason) - shells


# ---- the wire models refuse bad payloads -------------------------------------------------------

VALID_REQUEST: dict[str, Any] = {
    "type": "RequestRepayment", "command_id": "r1", "loan_id": "L1",
    "issued_at": "2026-01-01T09:00:00Z", "source": "app", "requested_by": "u1",
    "installments": [1, 2], "amount_minor": 1_000,
}  # fmt: skip
VALID_OPEN: dict[str, Any] = {
    "type": "OpenLoan", "command_id": "open-1", "loan_id": "L1",
    "issued_at": "2026-01-01T09:00:00+00:00", "borrower_id": "B1", "principal_minor": 300_000,
    "currency": "CNY", "annual_rate_bps": 1200, "term_months": 3,
    "repayment_method": "equal_principal", "first_due_date": "2026-02-01",
}  # fmt: skip

BAD_PAYLOADS: list[tuple[str, dict[str, Any]]] = [
    ("zero amount", VALID_REQUEST | {"amount_minor": 0}),
    ("negative amount", VALID_REQUEST | {"amount_minor": -100}),
    ("float amount", VALID_REQUEST | {"amount_minor": 100.5}),
    ("integral float amount", VALID_REQUEST | {"amount_minor": 100.0}),
    ("string amount", VALID_REQUEST | {"amount_minor": "100"}),
    ("boolean amount", VALID_REQUEST | {"amount_minor": True}),
    ("zero principal", VALID_OPEN | {"principal_minor": 0}),
    ("negative principal", VALID_OPEN | {"principal_minor": -1}),
    ("float principal", VALID_OPEN | {"principal_minor": 300_000.0}),
    ("string rate", VALID_OPEN | {"annual_rate_bps": "1200"}),
    ("negative fee", VALID_OPEN | {"fee_per_installment_minor": -1}),
    ("zero term", VALID_OPEN | {"term_months": 0}),
    ("lower-case currency", VALID_OPEN | {"currency": "cny"}),
    ("unknown method", VALID_OPEN | {"repayment_method": "balloon"}),
    ("extra field", VALID_REQUEST | {"note": "hi"}),
    ("extra field on open", VALID_OPEN | {"card_number": "6222000000000000"}),
    ("empty command id", VALID_REQUEST | {"command_id": ""}),
    ("command id with a space", VALID_REQUEST | {"command_id": "r 1"}),
    ("command id with a slash", VALID_REQUEST | {"command_id": "r/1"}),
    ("command id of 65 chars", VALID_REQUEST | {"command_id": "r" * 65}),
    ("non-UTC issued_at", VALID_REQUEST | {"issued_at": "2026-01-01T17:00:00+08:00"}),
    ("naive issued_at", VALID_REQUEST | {"issued_at": "2026-01-01T09:00:00"}),
    ("no installments", VALID_REQUEST | {"installments": []}),
    ("installment zero", VALID_REQUEST | {"installments": [0]}),
    ("unknown source", VALID_REQUEST | {"source": "web"}),
    ("unknown type", VALID_REQUEST | {"type": "ForgiveLoan"}),
    ("unknown schema version", VALID_REQUEST | {"schema_version": 2}),
    ("missing loan id", {k: v for k, v in VALID_REQUEST.items() if k != "loan_id"}),
]


@pytest.mark.parametrize("payload", [VALID_REQUEST, VALID_OPEN], ids=["request", "open"])
def test_the_valid_payloads_parse(payload: dict[str, Any]) -> None:
    assert parse_command(json.dumps(payload)).command_id == payload["command_id"]


@pytest.mark.parametrize(("name", "payload"), BAD_PAYLOADS, ids=[n for n, _ in BAD_PAYLOADS])
def test_the_wire_models_reject_bad_payloads(name: str, payload: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        parse_command(json.dumps(payload))


# ---- idempotency ------------------------------------------------------------------------------


def test_a_repeated_command_is_a_duplicate_with_the_original_event_ids() -> None:
    state, skipping = opened(), Policy(max_days_ahead=60)  # MAR_10 is 37 days past the first due
    command = close_day(MAR_10)
    original = when(state, command, skipping)
    state = fold(state, original.events)
    retry = when(state, command.model_copy(update={"issued_at": at(9_999)}), skipping)
    assert len(original.outcome.event_ids) == 6
    assert (retry.outcome.status, retry.outcome.event_ids, retry.events) == (
        OutcomeStatus.DUPLICATE,
        original.outcome.event_ids,
        (),
    )


def test_a_repeated_request_after_its_attempt_settled_is_still_a_duplicate() -> None:
    state = succeeded()
    retry = when(state, request("r1", issued_at=at(500)))
    assert (retry.outcome.status, retry.outcome.event_ids, retry.events) == (
        OutcomeStatus.DUPLICATE,
        state.processed["r1"].event_ids,
        (),
    )


def test_a_refused_request_repeated_once_the_loan_would_take_it_is_refused_alike() -> None:
    """docs/design.md: a repeat returns the original outcome. Found by the chaos run: the
    gateway re-sent an auto-debit request after a restart; refused the first time (an attempt
    was in flight), it started a new attempt the second time."""
    collection = request("agent-1", Source.COLLECTION, requested_by="agent-3")
    first = when(in_flight(), collection)
    assert [event.type for event in first.events] == ["CommandRejected"]
    state = after(
        fold(in_flight(), first.events), failure("f1", ATTEMPT, "card_expired", retriable=False)
    )
    assert state.in_flight is None  # a new request would start a deduction now
    retry = when(state, collection.model_copy(update={"issued_at": at(9_999)}))
    assert (retry.outcome.status, retry.outcome.reason, retry.events) == (
        OutcomeStatus.REJECTED,
        RejectionReason.DEDUCTION_IN_PROGRESS,
        (),
    )
    assert retry.outcome == first.outcome  # the same bytes on ledger.outcomes
    altered = when(state, collection.model_copy(update={"installments": (1,)}))
    assert altered.outcome.reason is RejectionReason.IDEMPOTENCY_CONFLICT


def test_a_command_for_a_loan_that_does_not_exist_leaves_no_record() -> None:
    decision = when(initial_state(LOAN), request("r1"))
    assert (decision.outcome.reason, decision.events) == (RejectionReason.UNKNOWN_LOAN, ())


def test_a_repeated_open_loan_is_a_duplicate_not_loan_exists() -> None:
    state = initial_state(LOAN)
    original = when(state, small_loan())
    retry = when(fold(state, original.events), small_loan(issued_at=at(60)))
    assert (retry.outcome.status, retry.outcome.event_ids) == (
        OutcomeStatus.DUPLICATE,
        original.outcome.event_ids,
    )


# ---- determinism and the envelope ------------------------------------------------------------

SCENARIOS: list[tuple[str, Callable[[], LoanState], Command]] = [
    ("open", unopened, small_loan()),
    ("close a day with late fees", due, close_day(date(2026, 3, 4))),
    ("request", due, request("r2")),
    ("success above the attempt", in_flight, success("s9", ATTEMPT, 104_000)),
    ("retriable failure", in_flight, failure("f9", ATTEMPT, "channel_busy", retriable=True)),
    ("duplicate debit", succeeded, duplicate_debit("d9", ATTEMPT, 103_500)),
    ("reversal", succeeded, reversal("v9", ATTEMPT)),
]


@pytest.mark.parametrize(("name", "state", "command"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_deciding_the_same_command_twice_gives_identical_events_and_bytes(
    name: str, state: Callable[[], LoanState], command: Command
) -> None:
    first, second = when(state(), command), when(state(), command)
    assert first == second
    assert [encode_event(e) for e in first.events] == [encode_event(e) for e in second.events]
    assert [parse_event(encode_event(e)) for e in first.events] == list(first.events)


@pytest.mark.parametrize(("name", "state", "command"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_the_envelope_derives_from_the_command_and_the_state(
    name: str, state: Callable[[], LoanState], command: Command
) -> None:
    before = state()
    events = when(before, command).events
    count = len(events)
    assert [e.seq for e in events] == list(range(before.next_seq, before.next_seq + count))
    assert [e.event_id for e in events] == [
        event_id(LOAN, command.command_id, before.next_seq + i) for i in range(count)
    ]
    assert {(e.loan_id, e.causation_id, e.occurred_at) for e in events} == {
        (LOAN, command.command_id, command.issued_at)
    }
