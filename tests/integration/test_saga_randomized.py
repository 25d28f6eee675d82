"""2,000 loans through misbehaving channels, every failure mode mixed in, the gateway killed twice.

The ledger's log and the simulator's ground truth must agree card by card once everything has
settled and the statements are reconciled.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from tests.integration.saga import (
    SECOND_DUE,
    Saga,
    card_net,
    collected_from_card,
    due_on,
    saga_fixture,
    settled,
    workload,
)
from tests.support.builders import FIRST_DUE

pytestmark = pytest.mark.integration
LOANS = 2_000
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
        != collected_from_card(by_loan[loan], loan)
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
    collected = sum(collected_from_card(by_loan[loan], loan) for loan in loans)
    assert collected > 0
    assert fold.seq_gaps() == []
    assert fold.conflicting_repeats == []
    saga.assert_books(timeout_s=180)


def _nothing() -> Any:
    from streams.dev.channels.simulator import AccountTruth

    return AccountTruth()
