"""2,000 loans through misbehaving channels, every failure mode mixed in, the gateway killed twice.

The ledger's log and the simulator's ground truth must agree card by card once everything has
settled and the statements are reconciled.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest

from schemas.commands import Command, Source
from tests.integration.pipeline import LogFold
from tests.integration.saga import Saga, card_net, saga_fixture
from tests.unit.builders import FIRST_DUE, close_day, open_loan, request

pytestmark = pytest.mark.integration
LOANS = 2_000
SECOND_DUE = date(2026, 3, 1)
ONE_DAY = timedelta(days=1)

ALPHA = {
    "latency_ms": 5,
    "timeout_ms": 200,
    "processing_ms": 400,
    "definite_failure": 0.06,
    "processing": 0.05,
    "timeout_then_debit": 0.03,
    "timeout_no_effect": 0.02,
    "lost_in_transit": 0.02,
    "cross_midnight": 0.03,
    "reversed_later": 0.01,
    "double_debit": 0.01,
}
BETA = {"latency_ms": 5, "processing_ms": 300, "definite_failure": 0.02, "processing": 0.1}


@pytest.fixture(scope="module", params=["at_least_once", "exactly_once"])
def saga(
    request: pytest.FixtureRequest,
    kafka_bootstrap: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Saga]:
    """A backlog of thousands of commands is normal here: ages scaled for that, not for alerts."""
    workdir = tmp_path_factory.mktemp(f"random-{request.param}")
    gateway = {"takeover_age_s": "60", "stuck_alert_age_s": "600", "sweep_interval_s": "5"}
    yield from saga_fixture(request.param, kafka_bootstrap, workdir, gateway)


def workload(rng: random.Random, loans: list[str]) -> tuple[list[Command], list[Command]]:
    """Day one (open, first installment due, doors racing the auto-debit job) and day two."""
    first: list[Command] = []
    second: list[Command] = []
    for loan in loans:
        first.append(
            open_loan(
                f"open-{loan}",
                loan,
                borrower_id=f"B-{loan}",
                debit_account_ref=f"card-{loan}",
                principal_minor=rng.randrange(300_000, 3_000_000),
                term_months=rng.choice((2, 3, 6)),
            )
        )
        first.append(close_day(FIRST_DUE, f"close1-{loan}", loan))
        if rng.random() < 0.5:
            first.append(request(f"app-{loan}", Source.APP, loan))
        if rng.random() < 0.2:
            first.append(request(f"agent-{loan}", Source.COLLECTION, loan, requested_by="agent-3"))
        second.append(close_day(SECOND_DUE, f"close2-{loan}", loan))
    return first, second


def settled(saga: Saga) -> tuple[LogFold, dict[str, list[dict[str, Any]]]]:
    """Wait until no attempt is in flight and no refund pending, twice in a row."""
    quiet_since: float | None = None
    deadline = time.monotonic() + 600
    while True:
        records = saga.pipeline.read("ledger.events", timeout_s=5)
        fold = LogFold().fold(records)
        by_loan: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for value in fold.by_seq.values():
            event = json.loads(value)
            by_loan[event["loan_id"]].append(event)
        busy = [loan for loan, events in by_loan.items() if _open_work(events)]
        if not busy:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 5:
                return fold, by_loan
        else:
            quiet_since = None
        assert time.monotonic() < deadline, f"{len(busy)} loans never settled, e.g. {busy[:3]}"
        time.sleep(2)


def _open_work(events: list[dict[str, Any]]) -> bool:
    opened = {e.get("attempt_id") or e.get("refund_id") for e in events if e["type"] in STARTS}
    closed = {e.get("attempt_id") or e.get("refund_id") for e in events if e["type"] in ENDS}
    return bool(opened - closed)


STARTS = {"DeductionStarted", "RefundStarted"}
ENDS = {"DeductionSucceeded", "DeductionFailed", "RefundSucceeded", "RefundFailed"}


def due_on(events: list[dict[str, Any]]) -> int:
    """Everything the loan can ever owe: the schedule plus late fees."""
    [opened] = [e for e in events if e["type"] == "LoanOpened"]
    scheduled = sum(
        row["principal_minor"] + row["interest_minor"] + row["fee_minor"]
        for row in opened["schedule"]
    )
    late_fees: int = sum(e["amount_minor"] for e in events if e["type"] == "LateFeeAssessed")
    return int(scheduled) + late_fees


def ledger_collected(events: list[dict[str, Any]], loan: str) -> int:
    net = 0
    for event in events:
        for posting in event["postings"]:
            if posting["debit"].startswith("channel:") and posting["credit"].startswith(
                f"loan:{loan}:"
            ):
                net += posting["amount_minor"]
            if posting["credit"].startswith("channel:") and posting["debit"].startswith(
                f"loan:{loan}:"
            ):
                net -= posting["amount_minor"]
    return net


@pytest.mark.timeout(2400)
def test_two_thousand_loans_the_cards_and_the_books_agree(saga: Saga) -> None:
    rng = random.Random(20261126)
    loans = [f"R-{n:05d}-{rng.getrandbits(24):06x}" for n in range(LOANS)]
    broke = {f"card-{loan}" for loan in rng.sample(loans, LOANS // 50)}
    saga.behave("alpha", **ALPHA, insufficient_funds_accounts=frozenset(broke))
    saga.behave("beta", **BETA)
    day_one, day_two = workload(rng, loans)

    began = time.monotonic()
    saga.send(*day_one)
    time.sleep(8)
    saga.pipeline.signal_worker("gateway", signal.SIGKILL)  # restarted by the supervisor
    saga.pipeline.wait_for_outcomes({c.command_id for c in day_one}, timeout_s=600)
    settled(saga)
    print(f"day one settled after {time.monotonic() - began:.0f} s")
    saga.send(*day_two)
    time.sleep(5)
    saga.pipeline.signal_worker("gateway", signal.SIGKILL)
    saga.pipeline.wait_for_outcomes({c.command_id for c in day_two}, timeout_s=600)
    settled(saga)

    findings: list[dict[str, Any]] = []
    for channel in ("alpha", "beta"):
        # Each statement day once; a success booked across midnight is on the day after.
        for day in (FIRST_DUE, FIRST_DUE + ONE_DAY, SECOND_DUE, SECOND_DUE + ONE_DAY):
            findings += saga.reconcile(channel, day)["findings"]
    fold, by_loan = settled(saga)
    print(f"reconciled and settled after {time.monotonic() - began:.0f} s")

    kinds = sorted({f["type"] for f in findings})
    print(f"findings: {len(findings)} of kinds {kinds}; gateway restarts: {saga.pipeline.restarts}")
    assert {f["status"] for f in findings} <= {"accepted", "duplicate"}, findings
    truth = saga.truth()
    mismatched = [
        loan
        for loan in loans
        if card_net(truth.accounts.get(f"card-{loan}", _nothing()))
        != ledger_collected(by_loan[loan], loan)
    ]
    assert mismatched == [], f"{len(mismatched)} cards disagree, e.g. {mismatched[:3]}"
    over = [
        loan
        for loan in loans
        if card_net(truth.accounts.get(f"card-{loan}", _nothing())) > due_on(by_loan[loan])
    ]
    assert over == [], f"cards debited more than was due: {over[:3]}"
    assert all(truth.accounts.get(card, _nothing()).charged_minor == 0 for card in broke), (
        "a card without funds was charged"
    )
    collected = sum(ledger_collected(by_loan[loan], loan) for loan in loans)
    assert collected > 0
    assert fold.seq_gaps() == []
    assert fold.conflicting_repeats == []
    saga.assert_books(timeout_s=180)


def _nothing() -> Any:
    from streams.channels.simulator import AccountTruth

    return AccountTruth()
