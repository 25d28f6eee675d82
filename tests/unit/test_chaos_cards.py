"""The chaos run's double-debit check against the simulator's ground truth. The first version
counted every installment two charged orders named; a short run in CI then flagged 55 loans that
were right: a late fee assessed while installment 1's debit was in flight left a remainder that
the next due date's debit of [1, 2] paid."""

from typing import Any

from streams.dev.channels.simulator import GroundTruth, OrderTruth
from tests.support.chaos import installments_overcharged

ROW = {"principal_minor": 900, "interest_minor": 100, "fee_minor": 0}
OPENED = {
    "type": "LoanOpened",
    "schedule": [{"number": 1, **ROW}, {"number": 2, **ROW}],
}


def started(order: str, amount: int, installments: list[int]) -> dict[str, Any]:
    return {
        "type": "DeductionStarted",
        "order_id": order,
        "amount_minor": amount,
        "installments": installments,
    }


def refunded(refund: str, order: str, amount: int) -> list[dict[str, Any]]:
    return [
        {"type": "RefundStarted", "refund_id": refund, "order_id": order, "amount_minor": amount},
        {"type": "RefundSucceeded", "refund_id": refund},
    ]


def charged(**charges: int) -> GroundTruth:
    orders = {order: OrderTruth(charges=n, channel="alpha") for order, n in charges.items()}
    return GroundTruth(accounts={}, orders=orders)


def test_a_late_fee_remainder_paid_by_the_next_debit_is_not_a_double_debit() -> None:
    events = [
        OPENED,
        started("a", 1000, [1]),
        {"type": "LateFeeAssessed", "installment": 1, "amount_minor": 50},
        started("b", 1050, [1, 2]),
    ]
    assert installments_overcharged(charged(a=1, b=1), {"L": events}) == []


def test_two_orders_kept_for_one_installment_are_a_double_debit() -> None:
    events = [OPENED, started("a", 1000, [1]), started("b", 1000, [1])]
    assert installments_overcharged(charged(a=1, b=1), {"L": events}) == [("L", (1,))]


def test_the_second_order_refunded_in_full_is_not_a_double_debit() -> None:
    events = [OPENED, started("a", 1000, [1]), started("b", 1000, [1]), *refunded("r", "b", 1000)]
    assert installments_overcharged(charged(a=1, b=1), {"L": events}) == []


def test_a_refund_started_but_not_confirmed_does_not_count() -> None:
    events = [OPENED, started("a", 1000, [1]), started("b", 1000, [1]), *refunded("r", "b", 1000)]
    assert installments_overcharged(charged(a=1, b=1), {"L": events[:-1]}) == [("L", (1,))]


def test_one_order_charged_twice_by_the_channel_is_a_double_debit() -> None:
    events = [OPENED, started("a", 1000, [1])]
    assert installments_overcharged(charged(a=2), {"L": events}) == [("L", (1,))]


def test_orders_the_channel_never_charged_keep_nothing() -> None:
    events = [OPENED, started("a", 1000, [1]), started("b", 1000, [1])]
    assert installments_overcharged(charged(a=1), {"L": events}) == []


def test_a_double_debit_is_found_through_a_union_of_installments() -> None:
    # Each order alone is within its installments; together [1] and [1, 2] took 2,100 of 2,000.
    events = [OPENED, started("a", 1000, [1]), started("b", 1100, [1, 2])]
    assert installments_overcharged(charged(a=1, b=1), {"L": events}) == [("L", (1, 2))]
