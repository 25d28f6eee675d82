"""The channel simulator's logic with an injected clock: fates, dedup, statements, ground truth."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.channel import (
    DebitAnswer,
    DebitFailed,
    DebitNotFound,
    DebitProcessing,
    DebitRequest,
    DebitSucceeded,
    RefundRequest,
    StatementLine,
)
from streams.dev.channels.config import (
    ChannelBehaviour,
    SimulatorConfig,
    default_config,
    load_config,
)
from streams.dev.channels.simulator import (
    AccountTruth,
    Fate,
    GroundTruth,
    OrderTruth,
    Reply,
    Simulator,
    UnknownChannelError,
    pick_fate,
)

CHANNEL = "alpha"
DAY = date(2025, 3, 14)
NEXT_DAY = DAY + timedelta(days=1)
AMOUNT = 10_000
LATENCY_MS = 40
TIMEOUT_MS = 300


class ManualClock:
    """Seconds on a monotonic scale that only the test moves."""

    def __init__(self) -> None:
        self.now_s = 1_000.0

    def __call__(self) -> float:
        return self.now_s


def simulator(clock: ManualClock | None = None, seed: int = 7, **behaviour: Any) -> Simulator:
    settings = {"latency_ms": LATENCY_MS, "timeout_ms": TIMEOUT_MS, **behaviour}
    config = SimulatorConfig(seed=seed, channels={CHANNEL: ChannelBehaviour(**settings)})
    return Simulator(config, clock or ManualClock())


def debit(order_id: str = "order-1", account_ref: str = "card-1") -> DebitRequest:
    return DebitRequest(
        order_id=order_id,
        account_ref=account_ref,
        amount_minor=AMOUNT,
        currency="CNY",
        business_date=DAY,
    )


def refund(refund_id: str = "refund-1") -> RefundRequest:
    return RefundRequest(
        refund_id=refund_id,
        order_id="order-1",
        account_ref="card-1",
        amount_minor=AMOUNT,
        currency="CNY",
    )


def succeeded(sim: Simulator, order_id: str = "order-1") -> DebitSucceeded:
    answer = sim.query(CHANNEL, order_id).answer
    assert isinstance(answer, DebitSucceeded)
    return answer


def charged_once() -> GroundTruth:
    return GroundTruth(
        accounts={"card-1": AccountTruth(charged_minor=AMOUNT, charges=1)},
        orders={"order-1": OrderTruth(charges=1, channel=CHANNEL)},
    )


# ---- fates -------------------------------------------------------------------------------


def test_resubmitting_an_order_never_charges_twice() -> None:
    sim = simulator()
    replies = [sim.submit(CHANNEL, debit()) for _ in range(5)]
    assert isinstance(replies[0].answer, DebitSucceeded)
    assert all(reply == replies[0] for reply in replies)
    assert sim.ground_truth() == charged_once()


@pytest.mark.parametrize(
    ("share", "answer_status", "wait_ms", "query_status", "charges"),
    [
        (None, "succeeded", LATENCY_MS, "succeeded", 1),
        ("definite_failure", "failed", LATENCY_MS, "failed", 0),
        ("processing", "processing", LATENCY_MS, "processing", 0),
        ("timeout_then_debit", None, TIMEOUT_MS, "succeeded", 1),
        ("timeout_no_effect", None, TIMEOUT_MS, "failed", 0),
        ("lost_in_transit", None, 0, "not_found", 0),
    ],
)
def test_each_fate_forced(
    share: str | None, answer_status: str | None, wait_ms: int, query_status: str, charges: int
) -> None:
    forced: dict[str, Any] = {} if share is None else {share: 1.0}
    sim = simulator(**forced)
    reply = sim.submit(CHANNEL, debit())
    assert (None if reply.answer is None else reply.answer.status) == answer_status
    assert (reply.wait_ms, reply.hang) == (wait_ms, False)
    query = sim.query(CHANNEL, "order-1")
    assert query.answer is not None
    assert (query.answer.status, query.wait_ms) == (query_status, 0)
    assert sim.ground_truth().accounts.get("card-1", AccountTruth()).charges == charges


def test_lost_request_is_not_recorded_and_its_resubmission_goes_through() -> None:
    sim = simulator(lost_in_transit=1.0)
    assert sim.submit(CHANNEL, debit()) == Reply(None)
    assert sim.query(CHANNEL, "order-1") == Reply(DebitNotFound(order_id="order-1"))
    assert sim.ground_truth() == GroundTruth(accounts={}, orders={})
    resubmitted = sim.submit(CHANNEL, debit())
    assert isinstance(resubmitted.answer, DebitSucceeded)
    assert sim.submit(CHANNEL, debit()) == resubmitted
    assert sim.ground_truth() == charged_once()


def test_processing_resolves_after_processing_ms() -> None:
    clock = ManualClock()
    sim = simulator(clock, processing=1.0, processing_ms=500)
    assert sim.submit(CHANNEL, debit()).answer == DebitProcessing(order_id="order-1")
    clock.now_s += 0.499
    assert sim.query(CHANNEL, "order-1").answer == DebitProcessing(order_id="order-1")
    assert sim.statement(CHANNEL, DAY).lines == ()
    assert sim.ground_truth().orders["order-1"].charges == 0
    clock.now_s += 0.001
    assert succeeded(sim).amount_minor == AMOUNT
    assert sim.ground_truth() == charged_once()


def test_admin_clock_advance_resolves_processing() -> None:
    sim = simulator(processing=1.0, processing_ms=500)
    sim.submit(CHANNEL, debit())
    sim.advance_clock(500)
    assert succeeded(sim).order_id == "order-1"


def test_processing_orders_end_failed_when_no_share_succeeds() -> None:
    clock = ManualClock()
    sim = simulator(clock, processing=0.5, definite_failure=0.5, processing_ms=100)
    orders = [f"order-{number}" for number in range(20)]
    first = [sim.submit(CHANNEL, debit(order_id)).answer for order_id in orders]
    assert any(isinstance(answer, DebitProcessing) for answer in first)
    clock.now_s += 0.1
    assert all(isinstance(sim.query(CHANNEL, order).answer, DebitFailed) for order in orders)


def test_pick_fate_reads_the_shares_in_order() -> None:
    shares = (0.25, 0.25, 0.25, 0.0, 0.0)
    picked = [pick_fate(shares, dice) for dice in (0.0, 0.25, 0.5, 0.75, 0.999)]
    assert picked == [
        Fate.DEFINITE_FAILURE,
        Fate.PROCESSING,
        Fate.TIMEOUT_THEN_DEBIT,
        Fate.SUCCEEDED,
        Fate.SUCCEEDED,
    ]


def test_shares_are_roughly_honoured() -> None:
    sim = simulator(definite_failure=0.3)
    answers = [sim.submit(CHANNEL, debit(f"order-{number}")).answer for number in range(2_000)]
    failed = sum(isinstance(answer, DebitFailed) for answer in answers)
    assert 500 < failed < 700


# ---- failures and switches ---------------------------------------------------------------


def test_definite_failures_use_the_configured_codes() -> None:
    sim = simulator(definite_failure=1.0, failure_codes=(("bank_down", True),))
    answer = sim.submit(CHANNEL, debit()).answer
    assert answer == DebitFailed(order_id="order-1", code="bank_down", retriable=True)


def test_insufficient_funds_override_beats_every_share() -> None:
    sim = simulator(timeout_then_debit=1.0, insufficient_funds_accounts=frozenset({"card-broke"}))
    broke = sim.submit(CHANNEL, debit(account_ref="card-broke"))
    expected = DebitFailed(order_id="order-1", code="insufficient_funds", retriable=False)
    assert broke == Reply(expected, LATENCY_MS)
    assert sim.submit(CHANNEL, debit("order-2")) == Reply(None, TIMEOUT_MS)


def test_fail_everything_refuses_new_orders_and_keeps_old_ones() -> None:
    sim = simulator()
    before = sim.submit(CHANNEL, debit())
    sim.set_behaviour(CHANNEL, ChannelBehaviour(fail_everything=True))
    assert sim.submit(CHANNEL, debit()).answer == before.answer
    assert isinstance(sim.submit(CHANNEL, debit("order-2")).answer, DebitFailed)


def test_never_answer_hangs_debits_and_queries_and_records_nothing() -> None:
    sim = simulator(never_answer=True)
    assert sim.submit(CHANNEL, debit()) == Reply(None, hang=True)
    assert sim.query(CHANNEL, "order-1") == Reply(None, hang=True)
    sim.set_behaviour(CHANNEL, ChannelBehaviour())
    assert sim.query(CHANNEL, "order-1").answer == DebitNotFound(order_id="order-1")


def test_unknown_channel_is_refused() -> None:
    sim = simulator()
    with pytest.raises(UnknownChannelError, match="'omega'"):
        sim.submit("omega", debit())
    with pytest.raises(UnknownChannelError):
        sim.statement("omega", DAY)


# ---- statements --------------------------------------------------------------------------


def line(answer: DebitSucceeded, booked: date, status: str = "succeeded") -> StatementLine:
    return StatementLine.model_validate(
        {
            "order_id": answer.order_id,
            "status": status,
            "amount_minor": answer.amount_minor,
            "channel_reference": answer.channel_reference,
            "business_date": booked,
        }
    )


def test_statement_books_a_success_on_its_business_date() -> None:
    sim = simulator()
    sim.submit(CHANNEL, debit())
    sim.submit(CHANNEL, debit("order-2", account_ref="card-2"))
    lines = sim.statement(CHANNEL, DAY).lines
    assert lines == (line(succeeded(sim), DAY), line(succeeded(sim, "order-2"), DAY))
    assert sim.statement(CHANNEL, NEXT_DAY).lines == ()


def test_failures_never_reach_the_statement() -> None:
    sim = simulator(definite_failure=1.0)
    sim.submit(CHANNEL, debit())
    assert sim.statement(CHANNEL, DAY).lines == ()


def test_cross_midnight_line_is_on_the_next_date_only() -> None:
    sim = simulator(cross_midnight=1.0)
    sim.submit(CHANNEL, debit())
    assert sim.statement(CHANNEL, DAY).lines == ()
    assert sim.statement(CHANNEL, NEXT_DAY).lines == (line(succeeded(sim), NEXT_DAY),)


def test_reversed_later_shows_in_the_statement_not_in_queries() -> None:
    sim = simulator(reversed_later=1.0)
    sim.submit(CHANNEL, debit())
    assert sim.statement(CHANNEL, DAY).lines == (line(succeeded(sim), DAY, "reversed"),)
    assert sim.ground_truth().accounts["card-1"] == AccountTruth(
        charged_minor=AMOUNT, reversed_minor=AMOUNT, charges=1
    )


def test_double_debit_adds_a_second_line_and_charges_twice() -> None:
    sim = simulator(double_debit=1.0)
    sim.submit(CHANNEL, debit())
    first, second = sim.statement(CHANNEL, DAY).lines
    assert first == line(succeeded(sim), DAY)
    assert (second.order_id, second.status, second.amount_minor) == ("order-1", "succeeded", AMOUNT)
    assert second.channel_reference != first.channel_reference
    assert sim.ground_truth() == GroundTruth(
        accounts={"card-1": AccountTruth(charged_minor=2 * AMOUNT, charges=2)},
        orders={"order-1": OrderTruth(charges=2, channel=CHANNEL)},
    )


# ---- refunds -----------------------------------------------------------------------------


def test_a_refund_is_paid_once_per_refund_id() -> None:
    sim = simulator(double_debit=1.0)
    sim.submit(CHANNEL, debit())
    answers = {sim.refund(CHANNEL, refund()) for _ in range(3)}
    assert len(answers) == 1
    assert sim.ground_truth().accounts["card-1"] == AccountTruth(
        charged_minor=2 * AMOUNT, refunded_minor=AMOUNT, charges=2
    )
    other = sim.refund(CHANNEL, refund("refund-2"))
    assert other.channel_reference not in {answer.channel_reference for answer in answers}
    assert sim.ground_truth().accounts["card-1"].refunded_minor == 2 * AMOUNT


# ---- determinism -------------------------------------------------------------------------

MIXED = {
    "definite_failure": 0.15,
    "processing": 0.15,
    "timeout_then_debit": 0.1,
    "timeout_no_effect": 0.1,
    "lost_in_transit": 0.1,
    "cross_midnight": 0.2,
    "reversed_later": 0.2,
    "double_debit": 0.2,
}
ORDERS = [f"order-{number}" for number in range(200)]


def play(orders: list[str], seed: int = 7) -> tuple[dict[str, Reply], Simulator]:
    clock = ManualClock()
    sim = simulator(clock, seed=seed, **MIXED)
    replies = {order: sim.submit(CHANNEL, debit(order, f"card-{order}")) for order in orders}
    clock.now_s += 10
    return replies, sim


def outcomes(sim: Simulator) -> dict[str, DebitAnswer | None]:
    return {order: sim.query(CHANNEL, order).answer for order in ORDERS}


def test_same_seed_same_fates_whatever_the_arrival_order() -> None:
    forward, first = play(ORDERS)
    backward, second = play(ORDERS[::-1])
    assert forward == backward
    assert outcomes(first) == outcomes(second)
    assert first.ground_truth() == second.ground_truth()
    for day in (DAY, NEXT_DAY):
        assert first.statement(CHANNEL, day) == second.statement(CHANNEL, day)
    assert len({reply.answer is None for reply in forward.values()}) == 2


def test_another_seed_gives_other_fates() -> None:
    assert play(ORDERS)[0] != play(ORDERS, seed=8)[0]


# ---- configuration -----------------------------------------------------------------------


def test_outcome_shares_may_not_exceed_one() -> None:
    with pytest.raises(ValidationError, match="at most 1"):
        ChannelBehaviour(definite_failure=0.6, processing=0.5)


def test_default_config_has_three_channels_and_loads_from_json(tmp_path: Path) -> None:
    config = default_config(seed=3)
    assert sorted(config.channels) == ["alpha", "beta", "gamma"]
    assert config.channels["gamma"].processing > 0.5
    path = tmp_path / "channels.json"
    path.write_text(config.model_dump_json())
    assert load_config(path) == config
