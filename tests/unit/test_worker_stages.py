"""The worker's stages on hand-built records: what a batch produces, with no broker.

The loop around them (transactions, commits, rebuilds) is exercised on a real broker in
tests/integration/test_pipeline.py.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import date

import pytest
from confluent_kafka import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import LoanState, Policy, business_clock
from ledger.business_clock import BusinessClock, DueCalendar
from ledger.decide import Decision
from ledger.sequence import LoanLog, Quarantine, Verdict
from ledger.snapshot import CLOCK_KEY, decode_books, decode_clock, decode_snapshot
from schemas.commands import CloseBusinessDayForPartition, Command
from schemas.events import encode_event, parse_event
from streams.metrics import Metrics
from streams.settings import LedgerSettings
from streams.worker import decider as decider_module
from streams.worker import snapshots
from streams.worker.decider import BatchDecider
from streams.worker.loop import Output, _next_offsets
from streams.worker.projector import BatchProjector, PartitionBooks
from streams.worker.snapshots import (
    COMMAND_OFFSET,
    Checkpoints,
    Mark,
    PartitionDay,
    Resting,
    command_offset,
    fold_one,
)
from tests.support.builders import (
    FIRST_DUE,
    T0,
    close_day,
    duplicate_debit,
    open_loan,
    request,
    success,
    when,
)
from tests.support.oracle import oracle_events, oracle_events_by_partition
from tests.support.workload import repayment_cycle

SETTINGS = LedgerSettings(topic_prefix="u.", partitions=2)
EVENTS, OUTCOMES, BALANCES, DLQ = (
    SETTINGS.topic(name)
    for name in ("ledger.events", "ledger.outcomes", "ledger.balances", "ledger.dlq")
)


def command_records(
    commands: Sequence[Command], partition: int = 0, first_offset: int = 0
) -> list[Message]:
    return [
        Message(
            topic=SETTINGS.topic("ledger.commands"),
            partition=partition,
            offset=offset,
            key=command.loan_id.encode(),
            value=command.model_dump_json().encode(),
        )
        for offset, command in enumerate(commands, start=first_offset)
    ]


def a_decider() -> BatchDecider:
    decider = BatchDecider(SETTINGS, SETTINGS.policy(), Metrics(), checkpoint_interval_s=0)
    decider.partitions[0] = LoanLog()  # what `rebuild` leaves for a partition with an empty log
    decider.checkpoints[0] = Checkpoints(events_end=0, pending_from=0)
    decider.resting[0] = Resting()
    decider.days[0] = PartitionDay(clock=None, calendar=DueCalendar())
    return decider


def event_records(outputs: list[Output]) -> list[Message]:
    events = [output for output in outputs if output.topic == EVENTS]
    return [
        Message(topic=EVENTS, partition=o.partition, offset=n, key=o.key, value=o.value)
        for n, o in enumerate(events)
    ]


def test_a_batch_of_commands_gives_the_oracles_events_and_one_outcome_each() -> None:
    commands = repayment_cycle(loans=30, seed=3)

    outputs = a_decider().handle(command_records(commands))

    events = {
        (parse_event(o.value).loan_id, parse_event(o.value).seq): o.value
        for o in outputs
        if o.topic == EVENTS
    }
    assert events == oracle_events(commands)
    answered = Counter(json.loads(o.value)["command_id"] for o in outputs if o.topic == OUTCOMES)
    assert answered == Counter(command.command_id for command in commands)


def test_every_event_names_the_offset_of_its_command() -> None:
    commands = repayment_cycle(loans=3, seed=1)
    records = command_records(commands)

    outputs = a_decider().handle(records)

    by_command = {command.command_id: offset for offset, command in enumerate(commands)}
    for output in outputs:
        if output.topic == EVENTS:
            event = parse_event(output.value)
            assert output.headers == [
                (COMMAND_OFFSET, str(by_command[event.causation_id]).encode())
            ]


def test_records_that_are_not_commands_are_dead_lettered_and_answered_when_possible() -> None:
    unreadable = Message(topic="c", partition=0, offset=0, key=b"L1", value=b"\xff not json")
    readable = Message(
        topic="c", partition=0, offset=1, key=b"L1",
        value=b'{"command_id": "c1", "loan_id": "L1", "type": "Nonsense"}',
    )  # fmt: skip

    outputs = a_decider().handle([unreadable, readable])

    assert [o.topic for o in outputs] == [DLQ, DLQ, OUTCOMES]
    assert json.loads(outputs[2].value)["reason"] == "invalid_command"
    assert dict(outputs[0].headers or [])["source_offset"] == b"0"


@pytest.mark.parametrize(
    ("value", "answered"),
    [
        (b'{"command_id": "c1", "loan_id": "L1", "amount_minor": NaN}', True),
        (b'{"command_id": "c1", "loan_id": "L1", "amount_minor": 1e400}', True),
        (b'{"command_id": "c1", "loan_id": "L1", "deep": ' + b"[" * 300 + b"]" * 300 + b"}", False),
        (b"[" * 1_500 + b"]" * 1_500, False),
        (b'{"command_id": "c1", "loan_id": "L\xff"}', False),  # not UTF-8
        (b'{"command_id": "c1", "loan_id": "' + b"x" * 65 + b'"}', False),
        (b'["c1", "L1"]', False),
    ],
)
def test_an_invalid_command_is_answered_only_when_its_ids_are_readable(
    value: bytes, answered: bool
) -> None:
    outputs = a_decider().handle(
        [Message(topic="c", partition=0, offset=0, key=b"L1", value=value)]
    )

    assert [o.topic for o in outputs] == ([DLQ, OUTCOMES] if answered else [DLQ])


def test_events_without_the_command_offset_header_count_as_decided_before_any_commit() -> None:
    """Events the retired faust engine wrote carry no header: a rebuild keeps them."""
    plain = Message(topic=EVENTS, partition=0, offset=0, value=b"{}")
    marked = Message(
        topic=EVENTS, partition=0, offset=1, value=b"{}", headers=[(COMMAND_OFFSET, b"41")]
    )

    assert (command_offset(plain), command_offset(marked)) == (-1, 41)


def test_a_batch_publishes_each_touched_balance_once_at_its_final_value() -> None:
    outputs = a_decider().handle(command_records(repayment_cycle(loans=10, seed=5)))
    projector = a_projector()

    published = projector.handle(event_records(outputs))

    keys = [o.key for o in published if o.topic == BALANCES]
    assert len(keys) == len(set(keys))
    totals = {o.key: json.loads(o.value)["balance_minor"] for o in published}
    assert totals == {
        key.encode(): value for key, (value, _c) in projector.books[0].balances.items()
    }
    assert sum(totals.values()) == 0


def a_projector() -> BatchProjector:
    projector = BatchProjector(SETTINGS, Metrics())
    projector.books[0] = PartitionBooks()
    projector.checkpoints[0] = Checkpoints(events_end=0, pending_from=0)
    return projector


def test_the_projectors_snapshots_resumed_give_back_its_books() -> None:
    """Each loan's record holds its share of every balance it moved: the records of a
    partition, resumed in any order, sum to the partition's balances and seqs."""
    outputs = a_decider().handle(command_records(repayment_cycle(loans=12, seed=6)))
    projector = a_projector()
    projector.handle(event_records(outputs))

    written = projector.checkpoint()

    again = PartitionBooks()
    for output in reversed(written):
        snapshot = decode_books(output.value)
        assert snapshot is not None
        assert (snapshot.events_from, snapshot.events_offset) == (0, len(event_records(outputs)))
        again.resume(snapshot)
    assert again.balances == projector.books[0].balances
    assert again.seqs.applied == projector.books[0].seqs.applied
    assert projector.checkpoint() == [], "nothing moved since"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=80))
def test_books_apply_each_seq_once_in_order_whatever_the_repeats(picks: list[int]) -> None:
    """Events delivered with repeats (at_least_once redeliveries) fold like the log without
    them: the balances are the same, and they sum to 0."""
    outputs = a_decider().handle(command_records(repayment_cycle(loans=4, seed=9)))
    events = [parse_event(o.value) for o in outputs if o.topic == EVENTS]
    once, repeated = PartitionBooks(), PartitionBooks()
    for event in events:
        once.apply(event, 0)
    # Replay a prefix with repeats drawn from what came before, then the rest.
    delivered = []
    for position, event in enumerate(events):
        delivered.append(event)
        if picks and picks[position % len(picks)] <= position:
            delivered.append(events[picks[position % len(picks)]])
    for event in delivered:
        repeated.apply(event, 0)

    assert repeated.balances == once.balances
    assert sum(balance for balance, _c in once.balances.values()) == 0


def test_a_missing_seq_quarantines_the_loan_in_the_projector() -> None:
    outputs = a_decider().handle(command_records(repayment_cycle(loans=1, seed=2)))
    events = [parse_event(o.value) for o in outputs if o.topic == EVENTS]
    assert len(events) >= 3
    books = PartitionBooks()

    assert books.apply(events[0], 0)[0] is Verdict.NEXT
    assert books.apply(events[2], 0) == (Verdict.GAP, [])
    assert books.apply(events[1], 0) == (Verdict.QUARANTINED, [])
    assert books.seqs.quarantined[events[0].loan_id] == Quarantine(events[0].loan_id, 2, 3)


def test_the_commit_position_is_one_past_each_partitions_last_record() -> None:
    records = [
        Message(topic="t", partition=p, offset=o, value=b"")
        for p, o in ((0, 5), (1, 9), (0, 6), (1, 10), (0, 7))
    ]

    assert {(tp.partition, tp.offset) for tp in _next_offsets(records)} == {(0, 8), (1, 11)}


def rebuilt_decider(event_outputs: list[Output]) -> BatchDecider:
    """A decider whose partition 0 was rebuilt from these event records (as `rebuild` folds
    them, minus the broker)."""
    decider = a_decider()
    for message in event_records(event_outputs):
        fold_one(decider.partitions[0], message)
    return decider


def test_a_gap_in_the_log_quarantines_that_loan_and_no_other() -> None:
    """Loan A's log lacks its seq 2; loan B's is whole. A's commands are refused as
    loan_quarantined (no event written), B's are decided as usual."""
    commands = repayment_cycle(loans=2, seed=4)
    outputs = a_decider().handle(command_records(commands))
    loans = sorted({c.loan_id for c in commands})
    events = [o for o in outputs if o.topic == EVENTS]
    holed = [o for o in events if o.key != loans[0].encode() or parse_event(o.value).seq != 2]
    decider = rebuilt_decider(holed)
    assert decider.partitions[0].quarantined[loans[0]] == Quarantine(loans[0], 2, 3)

    later: list[Command] = [close_day(date(2027, 6, 1), loan_id=loan) for loan in loans]
    answers = decider.handle(command_records(later))

    reasons = {
        json.loads(o.value)["loan_id"]: json.loads(o.value)["reason"]
        for o in answers
        if o.topic == OUTCOMES
    }
    assert reasons[loans[0]] == "loan_quarantined"
    assert reasons[loans[1]] != "loan_quarantined"
    assert not [o for o in answers if o.topic == EVENTS and o.key == loans[0].encode()]
    assert [o for o in answers if o.topic == EVENTS and o.key == loans[1].encode()]


def test_an_unreadable_event_quarantines_the_loan_of_its_key_and_repeats_are_skipped() -> None:
    commands = repayment_cycle(loans=1, seed=6)
    events = [o for o in a_decider().handle(command_records(commands)) if o.topic == EVENTS]
    garbled = Output(EVENTS, 0, events[0].key, b"\x00 not an event")
    decider = rebuilt_decider([*events, events[0], events[1]])
    assert decider.partitions[0].quarantined == {}
    assert rebuilt_decider([events[0], garbled, *events[1:]]).partitions[0].quarantined == {
        commands[0].loan_id: Quarantine(commands[0].loan_id, 2, None)
    }


def test_a_checkpoint_marks_where_its_batch_began_not_where_it_ended() -> None:
    """The mark a restore reads from must cover every event of a loan whose snapshot may not
    have landed: under at_least_once a checkpoint can land in part, so its mark is the events
    end *before* its batch (docs/design.md, "Snapshots")."""
    decider = a_decider()
    decider.checkpoints[0] = Checkpoints(events_end=40, pending_from=40)
    outputs = decider.handle(command_records(repayment_cycle(loans=3, seed=2)))
    events = [o for o in outputs if o.topic == EVENTS]
    for n in range(len(events)):
        decider.written(EVENTS, 0, 40 + n)  # the batch's events land at 40, 41, ...
    written = decider.checkpoint()
    assert {decode_snapshot(o.value).events_from for o in written} == {40}  # type: ignore[union-attr]
    assert decider.checkpoints[0].events_end > 40
    assert decider.checkpoint() == []  # nothing changed since


def test_loans_left_for_a_later_checkpoint_keep_their_earlier_mark(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(snapshots, "CHUNK", 2)
    decider = a_decider()
    decider.checkpoints[0] = Checkpoints(events_end=7, pending_from=7)
    decider.handle(command_records([open_loan(f"o{n}", loan_id=f"L{n}") for n in range(5)]))
    decider.written(EVENTS, 0, 99)
    first = decider.checkpoint()
    decider.handle([])  # the next batch begins with loans still to write
    second = decider.checkpoint()
    assert [len(first), len(second)] == [2, 2]
    assert {decode_snapshot(o.value).events_from for o in first + second} == {7}  # type: ignore[union-attr]


def test_a_loan_at_rest_leaves_memory_once_its_snapshot_is_written_and_wakes_for_a_command() -> (
    None
):
    """Paid off with nothing in flight, a loan is kept packed (its compressed snapshot); a
    later command for it is decided exactly as on the unpacked state."""
    decider = a_decider()
    loan = "L-rest"
    decider.handle(
        command_records(
            [
                open_loan("o", loan_id=loan, term_months=1),
                close_day(FIRST_DUE, loan_id=loan),
                request("r1", loan_id=loan),
            ]
        )
    )
    attempt = decider.partitions[0].states[loan].in_flight
    assert attempt is not None
    paid = success("ok", attempt.attempt_id, attempt.amount_minor, loan_id=loan)
    decider.handle(command_records([paid]))
    awake = decider.partitions[0].states[loan]
    assert awake.at_rest

    decider.checkpoint()

    assert loan not in decider.partitions[0].states
    assert loan in decider.resting[0]
    late = duplicate_debit("dup", attempt.attempt_id, 500, loan_id=loan)
    answers = decider.handle(command_records([late]))
    expected = when(awake, late)
    assert [o.value for o in answers if o.topic == EVENTS] == [
        encode_event(event) for event in expected.events
    ]
    assert decider.partitions[0].states[loan] == expected.state


def test_a_restore_reads_from_the_last_records_mark() -> None:
    mark = Mark()
    for events_from, committed in ((10, 5), (40, 9), (70, 12)):
        mark.saw(events_from, committed)
    assert mark.start == 70


def test_a_record_written_out_of_order_lowers_the_mark_to_its_own() -> None:
    """A paused process's late checkpoint (commands offset 9, after one at 12) lands after a
    newer one: its loan's later events start no later than its mark (40)."""
    mark = Mark()
    for events_from, committed in ((10, 5), (70, 12), (40, 9), (90, 15)):
        mark.saw(events_from, committed)
    assert mark.start == 40


def test_no_record_means_the_whole_log() -> None:
    assert Mark().start == 0


# ---- the business clock -------------------------------------------------------------------


def _tick_record(offset: int, business_date: date, partition: int = 0) -> Message:
    tick = CloseBusinessDayForPartition(
        command_id=f"business-day:{business_date.isoformat()}:p{partition}",
        issued_at=T0,
        partition=partition,
        business_date=business_date,
    )
    value = tick.model_dump_json().encode()
    return Message(topic="c", partition=0, offset=offset, key=b"business-day", value=value)


def test_a_tick_closes_the_day_at_once_only_for_the_loans_it_does_something_to() -> None:
    decider = a_decider()
    opens = [
        open_loan(f"open-{n}", loan_id=f"L{n}", first_due_date=date(2026, 2, 1 + n))
        for n in range(3)
    ]
    decider.handle(command_records(opens))

    outputs = decider.handle([_tick_record(3, date(2026, 2, 2))])  # L0 and L1 fall due

    closed = {parse_event(o.value).loan_id for o in outputs if o.topic == EVENTS}
    assert closed == {"L0", "L1"}
    [answer] = [json.loads(o.value) for o in outputs if o.topic == OUTCOMES]
    assert (answer["status"], answer["loan_id"], answer["partition"], answer["loans_closed"]) == (
        "accepted", None, 0, 2,
    )  # fmt: skip
    [repay] = command_records([request("app-2", loan_id="L2")], first_offset=4)
    caught_up = [parse_event(o.value) for o in decider.handle([repay]) if o.topic == EVENTS]
    assert caught_up[0].type == "BusinessDayClosed"
    assert caught_up[0].causation_id == "business-day:2026-02-02:p0"


def test_a_due_loan_whose_day_is_already_closed_stays_in_the_calendar() -> None:
    """A loan can be ahead of its partition's clock (an old-style `CloseBusinessDay` for a
    later date) while its calendar entry says an earlier date (as a reversal past the grace
    days leaves it): the tick passes it over and keeps it planned, never drops it for good."""
    decider = a_decider()
    decider.handle(command_records([open_loan(), close_day(date(2026, 2, 10))]))
    calendar = decider.days[0].calendar
    calendar.plan("L1", date(2026, 2, 3))

    passed_over = decider.handle([_tick_record(2, date(2026, 2, 4))])

    assert [o.topic for o in passed_over] == [OUTCOMES]
    assert len(calendar) == 1
    due_later = decider.handle([_tick_record(3, date(2026, 3, 1))])  # the next installment
    assert {parse_event(o.value).loan_id for o in due_later if o.topic == EVENTS} == {"L1"}


def test_a_command_whose_decision_raises_is_dead_lettered_and_its_partition_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 16, 8: an exception inside `decide` (a bug, such as the overflow that the limits at
    `OpenLoan` now prevent) dead-letters that command, answered `invalid_command`; nothing is
    written for it, so the loan's next command is decided from the state it had, and so is the
    next loan. Decided again (a batch after a crash), the batch gives the same outputs."""
    real_decide = business_clock.decide_in_partition

    def decide_in_partition(
        state: LoanState, command: Command, clock: BusinessClock | None, policy: Policy
    ) -> Decision:
        if command.command_id == "pay-bad":
            raise ArithmeticError("a bug in deciding a repayment")
        return real_decide(state, command, clock, policy)

    monkeypatch.setattr(decider_module, "decide_in_partition", decide_in_partition)
    commands: list[Command] = [
        open_loan("open-bad", "BAD"), close_day(FIRST_DUE, "close-bad", "BAD"),
        request("pay-bad", loan_id="BAD"), request("again-bad", loan_id="BAD"),
        open_loan("open-next", "NEXT"),
    ]  # fmt: skip
    outputs = a_decider().handle(command_records(commands))

    dead = [o for o in outputs if o.topic == DLQ]
    assert len(dead) == 1
    error = dict(dead[0].headers or [])["error"]
    assert (
        error == b"error: deciding RequestRepayment: ArithmeticError: a bug in deciding a repayment"
    )
    outcomes = [json.loads(o.value) for o in outputs if o.topic == OUTCOMES]
    labels = {o["command_id"]: o["reason"] or o["status"] for o in outcomes}
    assert [labels[c.command_id] for c in commands] == [
        "accepted", "accepted", "invalid_command", "accepted", "accepted",
    ]  # fmt: skip
    again = a_decider().handle(command_records(commands))
    assert [(o.topic, o.key, o.value) for o in again] == [
        (o.topic, o.key, o.value) for o in outputs
    ]


def test_a_loan_whose_close_raises_is_passed_over_and_the_tick_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decider = a_decider()
    opens = [open_loan(f"open-{n}", loan_id=f"L{n}") for n in range(2)]
    decider.handle(command_records(opens))
    real_close = business_clock.close_for

    def close_for(state: LoanState, clock: BusinessClock, policy: Policy) -> Decision | None:
        if state.loan_id == "L0":
            raise ArithmeticError("a bug in closing the day")
        return real_close(state, clock, policy)

    monkeypatch.setattr(decider_module, "close_for", close_for)

    outputs = decider.handle([_tick_record(2, FIRST_DUE)])

    assert {parse_event(o.value).loan_id for o in outputs if o.topic == EVENTS} == {"L1"}
    [answer] = [json.loads(o.value) for o in outputs if o.topic == OUTCOMES]
    assert (answer["status"], answer["loans_closed"]) == ("accepted", 1)
    assert decider.metrics.registry.get_sample_value("ledger_decide_errors_total") == 1


def test_a_tick_sent_to_another_partition_is_dead_lettered_and_answered() -> None:
    outputs = a_decider().handle([_tick_record(0, date(2026, 2, 2), partition=1)])

    assert [o.topic for o in outputs] == [DLQ, OUTCOMES]
    assert outputs[1].key == b"business-day:2026-02-02:p1"
    assert json.loads(outputs[1].value)["reason"] == "invalid_command"


def test_a_checkpoint_writes_the_clock_after_the_loans_and_once_per_commands_offset() -> None:
    decider = a_decider()
    decider.handle([*command_records([open_loan()]), _tick_record(1, date(2026, 1, 5))])

    written = decider.checkpoint()

    assert [o.key for o in written] == [b"L1", CLOCK_KEY.encode()]
    clock = decode_clock(written[-1].value)
    assert clock is not None
    assert (clock.clock.business_date, clock.command_offset) == (date(2026, 1, 5), 2)
    assert decider.checkpoint() == []


def test_a_batch_with_ticks_gives_the_partition_oracles_events() -> None:
    """The decider's shell around the clock (due calendar, catch-up) against the oracle the
    chaos run uses, which finds the due loans by brute force."""
    commands = repayment_cycle(loans=20, seed=4)
    records = command_records(commands)
    ticks = [_tick_record(len(records) + n, date(2026, 2, 1 + 3 * n)) for n in range(4)]
    asking = [request(f"late-{n}", loan_id=c.loan_id) for n, c in enumerate(commands[:40:4])]
    later = command_records(asking, first_offset=len(records) + len(ticks))
    decider = a_decider()
    outputs = decider.handle([*records, *ticks, *later])

    events = {
        (parse_event(o.value).loan_id, parse_event(o.value).seq): o.value
        for o in outputs
        if o.topic == EVENTS
    }
    sent = [*commands, *(_tick(m) for m in ticks), *(_command(m) for m in later)]
    assert events == oracle_events_by_partition([(0, command) for command in sent])


def _tick(message: Message) -> CloseBusinessDayForPartition:
    return CloseBusinessDayForPartition.model_validate_json(message.value() or b"")


def _command(message: Message) -> Command:
    from schemas.commands import parse_command

    return parse_command(message.value() or b"")
