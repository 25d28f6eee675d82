"""`ledger replay`'s fold of raw bytes and the balances topic's view, against the model fold."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.balances import fold_balances
from ledger.replay import ReplayFold, differences, published_balances
from schemas.events import Event, encode_event
from tests.unit.test_timeline import Scenario, a_busy_loan, a_troubled_loan


def raw_events(scenario: Callable[[], Scenario] = a_busy_loan) -> tuple[list[Event], list[bytes]]:
    events = scenario().events
    return events, [encode_event(event) for event in events]


def expected_balances(events: list[Event]) -> dict[str, int]:
    return fold_balances(p for e in events for p in e.postings)


def replayed(
    values: list[bytes | None], loads: Callable[[bytes], Any] = orjson.loads
) -> ReplayFold:
    fold = ReplayFold(loads=loads)
    fold.fold(values)
    return fold


@pytest.mark.parametrize("scenario", [a_busy_loan, a_troubled_loan])
def test_the_fold_of_raw_bytes_equals_the_fold_of_the_models(
    scenario: Callable[[], Scenario],
) -> None:
    events, values = raw_events(scenario)
    fold = replayed(list(values))

    assert fold.balances == expected_balances(events)
    assert fold.total_minor == 0
    assert fold.events == len(events)
    assert fold.applied == sum(1 for e in events if e.postings)
    assert fold.currencies == dict.fromkeys(fold.balances, "CNY")


def test_repeats_after_a_crash_are_skipped_by_seq() -> None:
    events, values = raw_events()
    fold = replayed([*values[:7], *values[3:7], *values[7:]])

    assert fold.balances == expected_balances(events)
    assert fold.duplicates == sum(1 for e in events[3:7] if e.postings)


def test_events_without_postings_are_never_decoded() -> None:
    events, values = raw_events()
    decoded: list[bytes] = []

    def loads(value: bytes) -> Any:
        decoded.append(value)
        return orjson.loads(value)

    replayed(list(values), loads)

    assert len(decoded) == sum(1 for e in events if e.postings)
    # Only the head up to the postings: never the schedule or the allocations behind them.
    assert all(b"schedule" not in value and b"allocations" not in value for value in decoded)


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda d: json.dumps(d).encode(), id="spaces"),
        pytest.param(lambda d: json.dumps(d, indent=2).encode(), id="indented"),
        pytest.param(
            lambda d: json.dumps({"postings": d["postings"], **d}, separators=(",", ":")).encode(),
            id="postings-first",
        ),
        pytest.param(
            lambda d: json.dumps(dict(reversed(d.items())), separators=(",", ":")).encode(),
            id="envelope-last",
        ),
    ],
)
def test_other_writers_encodings_are_decoded_whole(encode: Callable[[Any], bytes]) -> None:
    events, values = raw_events()
    fold = replayed([encode(json.loads(value)) for value in values], json.loads)
    assert fold.balances == expected_balances(events)


def test_a_tombstone_or_null_value_is_counted_and_ignored() -> None:
    events, values = raw_events()
    fold = replayed([None, *values])
    assert fold.balances == expected_balances(events)
    assert fold.events == len(events) + 1


def test_an_event_that_is_not_json_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"."):
        replayed([b'{"loan_id":"L1","seq":1,"postings":[{"debit":'])


# Account names are free text on the wire: brackets, braces and quotes must not fool the cut.
ACCOUNTS = st.sampled_from(["a", 'we"ird', "x}]", "}],", "[{]}", "loan:L:fee", "\\"])


@st.composite
def raw_log(draw: st.DrawFn) -> tuple[list[bytes], dict[str, int]]:
    """Events of two loans, each loan's seqs in order, some written twice; and the balances."""
    values: list[bytes] = []
    expected: dict[str, int] = {}
    for loan in ("L1", "L2"):
        for seq in range(1, draw(st.integers(1, 6)) + 1):
            transfers = st.tuples(ACCOUNTS, ACCOUNTS, st.integers(1, 10**12))
            postings = []
            for debit, credit, amount in draw(st.lists(transfers, max_size=3)):
                postings.append(
                    {"debit": debit, "credit": credit, "amount_minor": amount, "currency": "CNY"}
                )
                expected[debit] = expected.get(debit, 0) + amount
                expected[credit] = expected.get(credit, 0) - amount
            # A text field before the postings that holds the very bytes the fold looks for.
            detail = draw(st.sampled_from(['"postings":[]', '"postings":[', "}]", ""]))
            event = {"event_id": f"{loan}-{seq}", "detail": detail, "loan_id": loan, "seq": seq,
                     "postings": postings, "type": "X"}  # fmt: skip
            value = json.dumps(event, separators=(",", ":")).encode()
            values += [value] * draw(st.integers(1, 2))
    return values, expected


@settings(max_examples=200, deadline=None)
@given(raw_log())
def test_the_fast_fold_equals_a_plain_fold(log: tuple[list[bytes], dict[str, int]]) -> None:
    values, expected = log
    fold = replayed(list(values))
    assert fold.balances == expected
    assert fold.total_minor == 0


def balance_record(account: str, balance: int, event: str, shard: int | None = None) -> bytes:
    return json.dumps(
        {"type": "Balance", "account": account, "balance_minor": balance, "currency": "CNY",
         "as_of_event_id": event, "shard": shard, "schema_version": 1}
    ).encode()  # fmt: skip


def test_published_balances_sum_the_latest_record_of_each_shard() -> None:
    records = [
        (b"channel:alpha:clearing@0", balance_record("channel:alpha:clearing", 100, "e1", 0), 1),
        (b"channel:alpha:clearing@1", balance_record("channel:alpha:clearing", 50, "e2", 1), 5),
        (b"channel:alpha:clearing@0", balance_record("channel:alpha:clearing", 70, "e3", 0), 3),
        (b"loan:L1:fee", balance_record("loan:L1:fee", 500, "e4"), 2),
        (b"loan:L2:fee", balance_record("loan:L2:fee", 9, "e5"), 2),
        (b"loan:L2:fee", None, 4),  # a tombstone deletes the key
    ]

    published = published_balances(records, orjson.loads)

    assert list(published) == ["channel:alpha:clearing", "loan:L1:fee"]
    clearing = published["channel:alpha:clearing"]
    assert clearing.balance_minor == 120
    assert clearing.as_of_ms == 5
    assert sorted(s.as_of_event_id for s in clearing.shards) == ["e2", "e3"]
    assert published["loan:L1:fee"].balance_minor == 500
    assert published["loan:L1:fee"].shards[0].shard is None


def test_differences_treat_a_missing_account_as_zero() -> None:
    replayed_balances = {"a": 10, "b": 0, "c": -10}
    published = {"a": 10, "c": -7, "d": 3}
    assert differences(replayed_balances, published) == [("c", -10, -7), ("d", 0, 3)]
