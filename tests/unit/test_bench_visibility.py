"""The latency benchmark's reader counts an event's balances visible once a record as of it, or
of a later event of the same loan, is visible (the batched projector coalesces a batch)."""

from __future__ import annotations

import multiprocessing

import orjson
from confluent_kafka import Message

from streams.dev.bench.visibility import Counters, Seen


def balance(as_of: str) -> Message:
    return Message(
        topic="balances", partition=0, offset=0, value=orjson.dumps({"as_of_event_id": as_of})
    )


def a_reader(by_loan: dict[str, list[str]]) -> Seen:
    counters = Counters(
        multiprocessing.Event(), multiprocessing.Event(),
        multiprocessing.Value("q", 0), multiprocessing.Value("q", 0),
    )  # fmt: skip
    return Seen("outcomes", (frozenset(), by_loan), counters)


def test_a_later_event_of_the_loan_makes_the_superseded_ones_visible_with_it() -> None:
    seen = a_reader({"L1": ["e1", "e2", "e3"], "L2": ["f1"]})

    seen.take([balance("e2")], now=10.0)
    seen.take([balance("e1"), balance("f1")], now=11.0)  # e1 was already counted with e2
    seen.take([balance("e3")], now=12.0)

    assert seen.balances == {"e1": 10.0, "e2": 10.0, "f1": 11.0, "e3": 12.0}
    assert seen.counters.balanced_events.value == 4


def test_records_of_events_not_expected_are_ignored() -> None:
    seen = a_reader({"L1": ["e1"]})

    seen.take([balance("warm-up")], now=1.0)

    assert seen.balances == {}
    assert seen.counters.balanced_events.value == 0
