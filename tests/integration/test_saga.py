"""The deduction saga against misbehaving payment channels: issue #5's eight scenarios.

One worker, one channel simulator and one gateway run as real processes on the real broker for
the whole module, under each processing guarantee. Each scenario uses its own loans and sets the
channels' behaviour it needs; each checks the ledger's log AND the simulator's ground truth.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from datetime import date, timedelta

import pytest

from ledger.identity import auto_debit_command_id
from schemas.commands import Command, Source
from streams.reconcile.run import run_scheduled
from tests.integration.saga import (
    QUIET,
    Event,
    Saga,
    card_net,
    collected_from_card,
    of_type,
)
from tests.support.builders import FIRST_DUE, close_day, open_loan, request

pytestmark = pytest.mark.integration
INSTALLMENT_ONE = (1,)


@pytest.fixture(autouse=True)
def quiet_channels(saga: Saga) -> Iterator[None]:
    saga.behave("alpha")
    saga.behave("beta")
    yield
    saga.behave("alpha")  # also releases requests a never-answering channel held
    saga.behave("beta")


def new_loan(saga: Saga, *, close_first_due: bool = False) -> tuple[str, str]:
    """An open loan of 3 x ~4,000.00 CNY and its card; optionally its first installment due."""
    loan = f"L-{uuid.uuid4().hex[:12]}"
    card = f"card-{loan}"
    commands: list[Command] = [
        open_loan(
            f"open-{loan}",
            loan,
            borrower_id=f"B-{loan}",
            debit_account_ref=card,
            principal_minor=1_200_000,
            term_months=3,
        )
    ]
    if close_first_due:
        commands.append(close_day(FIRST_DUE, f"close-{loan}", loan))
    saga.send(*commands)
    saga.outcomes(*(command.command_id for command in commands))
    return loan, card


def pay_first_installment(saga: Saga, loan: str, command_id: str = "app") -> str:
    """The borrower taps "repay" for installment 1 (not due yet, so no auto-debit races it)."""
    command = request(f"{command_id}-{loan}", Source.APP, loan, installments=INSTALLMENT_ONE)
    saga.send(command)
    assert saga.outcomes(command.command_id)[command.command_id]["status"] == "accepted"
    return command.command_id


def settled(events: list[Event]) -> bool:
    return any(e["type"] in ("DeductionSucceeded", "DeductionFailed") for e in events[-3:]) and (
        not _in_flight(events)
    )


def _in_flight(events: list[Event]) -> bool:
    started = {e["attempt_id"] for e in of_type(events, "DeductionStarted")}
    ended = {
        e["attempt_id"] for e in events if e["type"] in ("DeductionSucceeded", "DeductionFailed")
    }
    return bool(started - ended)


def assert_card_agrees(saga: Saga, loan: str, card: str, events: list[Event]) -> None:
    """The simulator's ground truth and the ledger agree on what the card paid."""
    assert card_net(saga.card(card)) == collected_from_card(events, loan)


def assert_one_debit(saga: Saga, order_id: str) -> None:
    assert saga.truth().orders[order_id].charges == 1


# ---- 1 ---------------------------------------------------------------------------------------


def test_three_doors_at_the_same_moment_reach_the_channel_once(saga: Saga) -> None:
    saga.behave("alpha", latency_ms=1_500)  # keep the attempt in flight while the others arrive
    loan, card = new_loan(saga)
    app = request(f"app-{loan}", Source.APP, loan)
    agent = request(f"agent-{loan}", Source.COLLECTION, loan, requested_by="agent-7")
    # The day closes: installment 1 falls due and the gateway's auto-debit job asks for it too.
    saga.send(close_day(FIRST_DUE, f"close-{loan}", loan), app, agent)
    job = auto_debit_command_id(loan, 1, FIRST_DUE)

    outcomes = saga.outcomes(app.command_id, agent.command_id, job)
    accepted = [o for o in outcomes.values() if o["status"] == "accepted"]
    refused = [o["reason"] for o in outcomes.values() if o["status"] == "rejected"]
    assert len(accepted) == 1
    assert refused == ["deduction_in_progress"] * 2
    events = saga.wait_events(loan, settled)
    [started] = of_type(events, "DeductionStarted")
    assert len(of_type(events, "DeductionSucceeded")) == 1
    assert_one_debit(saga, started["order_id"])
    assert saga.card(card).charges == 1
    assert_card_agrees(saga, loan, card, events)
    saga.assert_books()


# ---- 2 ---------------------------------------------------------------------------------------


def test_a_timeout_after_which_the_debit_happened_is_posted_once_never_failed(saga: Saga) -> None:
    saga.behave("alpha", timeout_ms=300, timeout_then_debit=1.0)
    loan, card = new_loan(saga)
    pay_first_installment(saga, loan)

    events = saga.wait_events(loan, settled)
    kinds = [e["type"] for e in events]
    assert "DeductionOutcomeUnknown" in kinds
    assert "DeductionFailed" not in kinds
    assert len(of_type(events, "DeductionSucceeded")) == 1
    [started] = of_type(events, "DeductionStarted")
    assert_one_debit(saga, started["order_id"])
    assert_card_agrees(saga, loan, card, events)
    saga.assert_books()


# ---- 3 ---------------------------------------------------------------------------------------


def test_a_lost_request_is_resubmitted_with_the_same_order_id(saga: Saga) -> None:
    saga.behave("alpha", lost_in_transit=1.0)
    loan, card = new_loan(saga)
    pay_first_installment(saga, loan)

    events = saga.wait_events(loan, settled)
    [started] = of_type(events, "DeductionStarted")
    [resubmission] = of_type(events, "DeductionResubmissionRequested")
    assert resubmission["order_id"] == started["order_id"]
    assert resubmission["submission"] == 2
    assert len(of_type(events, "DeductionSucceeded")) == 1
    assert_one_debit(saga, started["order_id"])
    assert_card_agrees(saga, loan, card, events)
    saga.assert_books()


# ---- 4 ---------------------------------------------------------------------------------------


def test_an_asynchronous_channel_is_polled_to_success(saga: Saga) -> None:
    saga.behave("alpha", processing=1.0, processing_ms=2_500)
    loan, card = new_loan(saga)
    pay_first_installment(saga, loan)

    events = saga.wait_events(loan, settled)
    kinds = [e["type"] for e in events]
    assert kinds.count("DeductionProcessing") == 1  # reported once, polled quietly
    assert kinds.index("DeductionProcessing") < kinds.index("DeductionSucceeded")
    [started] = of_type(events, "DeductionStarted")
    assert_one_debit(saga, started["order_id"])
    assert_card_agrees(saga, loan, card, events)
    saga.assert_books()


# ---- 5 ---------------------------------------------------------------------------------------


def test_a_retriable_failure_moves_to_the_backup_channel(saga: Saga) -> None:
    saga.behave("alpha", definite_failure=1.0, failure_codes=(("channel_unavailable", True),))
    loan, card = new_loan(saga)
    pay_first_installment(saga, loan)

    events = saga.wait_events(loan, settled)
    first, backup = of_type(events, "DeductionStarted")
    assert (first["channel"], backup["channel"]) == ("alpha", "beta")
    assert backup["previous_attempt_id"] == first["attempt_id"]
    [failed] = of_type(events, "DeductionFailed")
    assert (failed["code"], failed["retriable"]) == ("channel_unavailable", True)
    [succeeded] = of_type(events, "DeductionSucceeded")
    assert succeeded["channel"] == "beta"
    truth = saga.truth()
    assert truth.orders[first["order_id"]].charges == 0
    assert truth.orders[backup["order_id"]].charges == 1
    assert_card_agrees(saga, loan, card, events)
    saga.assert_books()


def test_insufficient_funds_ends_the_attempt_with_no_retry(saga: Saga) -> None:
    loan, card = new_loan(saga)
    saga.behave("alpha", insufficient_funds_accounts=frozenset({card}))
    pay_first_installment(saga, loan)

    events = saga.wait_events(loan, settled)
    [started] = of_type(events, "DeductionStarted")
    [failed] = of_type(events, "DeductionFailed")
    assert (failed["code"], failed["retriable"]) == ("insufficient_funds", False)
    time.sleep(2)  # a backup attempt would have started by now
    assert len(of_type(saga.events(loan), "DeductionStarted")) == 1
    assert saga.truth().orders[started["order_id"]].charges == 0
    assert saga.card(card).charged_minor == 0
    saga.assert_books()


# ---- 6 ---------------------------------------------------------------------------------------


def test_a_gateway_killed_before_the_call_resumes_and_debits_once(saga: Saga) -> None:
    saga.pipeline.signal_worker("gateway", signal.SIGKILL, for_good=True)
    loan, card = new_loan(saga)
    pay_first_installment(saga, loan)
    # The attempt is in the log and nobody has called the channel.
    [started] = of_type(saga.wait_events(loan, lambda e: bool(of_type(e, "DeductionStarted"))),
                        "DeductionStarted")  # fmt: skip
    assert started["order_id"] not in saga.truth().orders
    saga.pipeline.restart("gateway")

    events = saga.wait_events(loan, settled, timeout_s=90)
    assert len(of_type(events, "DeductionSucceeded")) == 1
    assert_one_debit(saga, started["order_id"])
    assert_card_agrees(saga, loan, card, events)
    saga.assert_books()


def test_a_gateway_killed_after_the_call_before_reporting_debits_once(saga: Saga) -> None:
    saga.behave("alpha", latency_ms=4_000)  # the channel has the order; the answer is slow
    loan, card = new_loan(saga)
    pay_first_installment(saga, loan)
    [started] = of_type(saga.wait_events(loan, lambda e: bool(of_type(e, "DeductionStarted"))),
                        "DeductionStarted")  # fmt: skip
    deadline = time.monotonic() + 30
    while started["order_id"] not in saga.truth().orders:  # the call reached the channel
        assert time.monotonic() < deadline, "the gateway never called the channel"
        time.sleep(0.1)
    saga.pipeline.signal_worker("gateway", signal.SIGKILL)  # the supervisor restarts it

    events = saga.wait_events(loan, settled, timeout_s=90)
    assert len(of_type(events, "DeductionSucceeded")) == 1
    assert_one_debit(saga, started["order_id"])
    assert_card_agrees(saga, loan, card, events)
    saga.assert_books()


# ---- 7 ---------------------------------------------------------------------------------------


def test_reconciliation_tolerates_midnight_reverses_and_refunds(saga: Saga) -> None:
    loans = {}
    for fate in ("cross_midnight", "reversed_later", "double_debit"):
        saga.behave("alpha", **{fate: 1.0})
        loan, card = new_loan(saga)
        pay_first_installment(saga, loan)
        events = saga.wait_events(loan, settled)
        assert len(of_type(events, "DeductionSucceeded")) == 1
        [started] = of_type(events, "DeductionStarted")
        loans[fate] = (loan, card, started)
    day = date.fromisoformat(loans["cross_midnight"][2]["business_date"])
    assert all(date.fromisoformat(s["business_date"]) == day for _l, _c, s in loans.values())

    findings = []
    for statement_date in (day, day + timedelta(days=1)):
        findings += saga.reconcile("alpha", statement_date)["findings"]
    by_order = {f["order_id"]: f for f in findings}

    _loan, _card, midnight_start = loans["cross_midnight"]
    assert midnight_start["order_id"] not in by_order, "a cross-midnight order reported"

    reversed_loan, reversed_card, reversed_start = loans["reversed_later"]
    assert by_order[reversed_start["order_id"]]["type"] == "ReportReversal"
    assert by_order[reversed_start["order_id"]]["status"] == "accepted"
    events = saga.wait_events(reversed_loan, lambda e: bool(of_type(e, "DeductionReversed")))
    assert_card_agrees(saga, reversed_loan, reversed_card, events)

    double_loan, double_card, double_start = loans["double_debit"]
    assert by_order[double_start["order_id"]]["type"] == "ReportDuplicateDebit"
    events = saga.wait_events(double_loan, lambda e: bool(of_type(e, "RefundSucceeded")))
    assert saga.card(double_card).charges == 2
    assert saga.card(double_card).refunded_minor == double_start["amount_minor"]
    assert_card_agrees(saga, double_loan, double_card, events)

    fold = saga.assert_books()
    assert fold.balances[f"loan:{double_loan}:overpayment"] == 0
    assert fold.balances[f"loan:{reversed_loan}:principal"] > 0  # the installment reopened
    # Reconciling again finds nothing new: every finding is now a duplicate.
    again = saga.reconcile("alpha", day)["findings"]
    assert {f["status"] for f in again} <= {"duplicate"}


# ---- 8 ---------------------------------------------------------------------------------------


def test_a_channel_that_never_answers_raises_the_stuck_alert(saga: Saga) -> None:
    saga.behave("alpha", never_answer=True)
    loan, _card = new_loan(saga)
    pay_first_installment(saga, loan)

    # Scaled alert age: 8 s; the sweeper runs every second.
    events = saga.wait_events(loan, lambda e: bool(of_type(e, "DeductionStuck")), timeout_s=60)
    kinds = [e["type"] for e in events]
    assert "DeductionFailed" not in kinds
    assert "DeductionSucceeded" not in kinds
    assert saga.gateway_metric("ledger_gateway_stuck_attempts") >= 1
    # The channel recovers: the attempt settles and the alert clears.
    saga.behave("alpha", **QUIET.model_dump())
    events = saga.wait_events(loan, settled, timeout_s=60)
    assert len(of_type(events, "DeductionSucceeded")) == 1
    saga.assert_books()


def test_the_scheduled_reconciliation_catches_a_reversal(saga: Saga) -> None:
    """`ledger reconcile --every N`: recent days by the business clock, every channel."""
    loan = f"L-{uuid.uuid4().hex[:12]}"
    opened = open_loan(
        f"open-{loan}", loan, debit_account_ref=f"card-{loan}", first_due_date=date(2027, 6, 1)
    )
    day = date(2027, 5, 10)  # later than any other test's business day: the newest on the clock
    saga.send(opened, close_day(day, f"close-{loan}", loan))
    saga.outcomes(opened.command_id, f"close-{loan}")
    saga.behave("alpha", reversed_later=1.0)
    pay_first_installment(saga, loan)
    saga.wait_events(loan, settled)
    saga.send(close_day(day + timedelta(days=1), f"close2-{loan}", loan))
    saga.outcomes(f"close2-{loan}")

    settings = saga.pipeline.settings.model_copy(update={"channels_url": saga.channels_url})
    run_scheduled(settings, every_s=1, rounds=1)

    events = saga.wait_events(loan, lambda e: bool(of_type(e, "DeductionReversed")))
    assert len(of_type(events, "DeductionReversed")) == 1
    assert_card_agrees(saga, loan, f"card-{loan}", events)
    saga.assert_books()
