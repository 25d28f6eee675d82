"""The decider's snapshots on a real broker, under both guarantees (issue 14).

A decider loop decides a workload in several waves (so several batches, several checkpoints),
then stops. A new decider's restore must read the snapshots and only the events written after
the last checkpoint's mark, and end with exactly the states a fold of the whole events log gives.
A partition with events and no snapshots (a log from before snapshots existed) is folded whole,
and every loan is written again.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, timedelta

import pytest
from confluent_kafka import Consumer, Producer

from ledger.sequence import LoanLog
from ledger.snapshot import CLOCK_KEY, decode_snapshot
from schemas.commands import CloseBusinessDayForPartition, Command
from schemas.events import Event, parse_event
from streams.client import TICK_KEY, business_day_ticks
from streams.logread import LogReader
from streams.metrics import Metrics
from streams.settings import LedgerSettings
from streams.worker.decider import BatchDecider
from streams.worker.loop import BatchLoop
from streams.worker.projector import BatchProjector, PartitionBooks
from streams.worker.restore import committed_offsets
from streams.worker.snapshots import COMMAND_OFFSET, restore_partition, ticks_since
from tests.integration.test_restore import settings_for
from tests.support.builders import T0, open_loan, request
from tests.support.oracle import oracle_events
from tests.support.workload import repayment_cycle

pytestmark = pytest.mark.integration
LOANS = 120
WAVES = 5


def whole_log_fold(settings: LedgerSettings) -> LoanLog:
    """The independent half: every event of partition 0 folded in order, no snapshot read."""
    loans = LoanLog()
    with LogReader(settings, "ledger.events", partitions=[0]) as reader:
        for batch in reader.batches():
            for message in batch:
                loans.fold(parse_event(message.value() or b""))
    return loans


def latest_snapshots(settings: LedgerSettings) -> dict[str, int]:
    """loan id -> seq of its latest snapshot on ledger.loan-states."""
    found: dict[str, int] = {}
    with LogReader(settings, "ledger.loan-states", partitions=[0]) as reader:
        for batch in reader.batches():
            for message in batch:
                if message.key() == CLOCK_KEY.encode():
                    continue
                snapshot = decode_snapshot(message.value() or b"")
                assert snapshot is not None
                found[snapshot.loan_id] = snapshot.seq
    return found


def decide_in_waves(
    settings: LedgerSettings,
    checkpoint_interval_s: float,
    commands: Sequence[Command | CloseBusinessDayForPartition] = (),
    waves: int = WAVES,
    after_wave: Callable[[], None] = lambda: None,
) -> int:
    """Run a decider loop over the workload (default: repayment cycles), sent in waves, then
    stop it; the commands sent."""
    commands = commands or repayment_cycle(loans=LOANS, seed=14)
    topic = settings.topic("ledger.commands")
    decider = BatchDecider(
        settings, settings.policy(), Metrics(), checkpoint_interval_s=checkpoint_interval_s
    )
    loop = BatchLoop(settings, decider, "decider", "snap-1")
    stop = threading.Event()
    runner = threading.Thread(target=loop.run, args=(stop,))
    runner.start()
    producer = Producer(settings.producer_config())
    size = len(commands) // waves
    already = committed(settings)  # a later round goes on from the commands decided before
    try:
        for wave in range(waves):
            for command in commands[wave * size : (wave + 1) * size]:
                value, key = command.model_dump_json().encode(), _key(command)
                producer.produce(topic, value, key, partition=0)
            producer.flush(10)
            _wait_until_decided(decider, already + (wave + 1) * size)
            after_wave()
    finally:
        stop.set()
        runner.join(60)
    assert not runner.is_alive()
    return already + waves * size


def _key(command: Command | CloseBusinessDayForPartition) -> bytes:
    return (
        TICK_KEY if isinstance(command, CloseBusinessDayForPartition) else command.loan_id.encode()
    )


def _decided(decider: BatchDecider) -> int:
    checkpoints = decider.checkpoints.get(0)
    return 0 if checkpoints is None else checkpoints.command_offset


def _wait_until_decided(decider: BatchDecider, commands: int, timeout_s: float = 90) -> None:
    """Until the decider has decided `commands` and committed their offsets: the offset it is
    at moves as soon as it starts a command, before its batch's transaction commits (under
    exactly_once, a reader right after saw no event of the wave at all)."""
    deadline = time.monotonic() + timeout_s
    while _decided(decider) < commands or committed(decider.settings) < commands:
        assert time.monotonic() < deadline, f"timed out waiting for {commands} commands decided"
        time.sleep(0.1)


def committed(settings: LedgerSettings) -> int:
    group = f"{settings.group_id}-batched-decider"
    consumer = Consumer(settings.confluent_config() | {"group.id": group})
    try:
        return committed_offsets(consumer, settings.topic("ledger.commands"), [0])[0]
    finally:
        consumer.close()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_restore_reads_the_snapshots_and_only_the_events_after_them(
    kafka_bootstrap: str, guarantee: str
) -> None:
    """A checkpoint after every batch (interval 0): the last mark is where the last wave began."""
    settings = settings_for(kafka_bootstrap, processing_guarantee=guarantee)
    sent = decide_in_waves(settings, checkpoint_interval_s=0)
    assert committed(settings) == sent
    whole = whole_log_fold(settings)
    total_events = sum(state.next_seq - 1 for state in whole.states.values())

    restored = restore_partition(settings, 0, committed(settings))

    assert restored.from_snapshots
    states = restored.loans.states | restored.resting.states()
    assert states == whole.states, "the restore must equal a fold of the log"
    assert restored.loans.quarantined == {}
    # Only the last wave's events at most (its checkpoint's mark is where that wave began).
    assert restored.events_read <= total_events // WAVES + 10, (restored.events_read, total_events)
    snapshots = latest_snapshots(settings)
    assert snapshots == {loan: state.next_seq - 1 for loan, state in whole.states.items()}


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_with_an_interval_a_stop_writes_the_last_checkpoint_and_nothing_is_missed(
    kafka_bootstrap: str, guarantee: str
) -> None:
    """Waves well within one interval of 30 s: only the first batch and the stop write
    snapshots, and the restore still ends with exactly the states of a fold of the log."""
    settings = settings_for(kafka_bootstrap, processing_guarantee=guarantee)
    sent = decide_in_waves(settings, checkpoint_interval_s=30)
    whole = whole_log_fold(settings)

    restored = restore_partition(settings, 0, committed(settings))

    assert committed(settings) == sent
    assert restored.from_snapshots
    assert restored.loans.states | restored.resting.states() == whole.states
    assert latest_snapshots(settings) == {
        loan: state.next_seq - 1 for loan, state in whole.states.items()
    }, "the stop must write every loan changed since the last checkpoint"


def test_a_log_without_snapshots_is_folded_whole_and_every_loan_written_again(
    kafka_bootstrap: str,
) -> None:
    settings = settings_for(kafka_bootstrap, processing_guarantee="at_least_once")
    commands = repayment_cycle(loans=30, seed=15)
    writer = Producer(settings.producer_config())
    for (loan_id, _seq), value in sorted(oracle_events(commands).items()):
        writer.produce(
            settings.topic("ledger.events"), value, loan_id.encode(), partition=0,
            headers=[(COMMAND_OFFSET, b"-1")],
        )  # fmt: skip
    writer.flush(10)

    decider = BatchDecider(settings, settings.policy(), Metrics())
    restoration = decider.restore(0, committed=0)
    restoration.install()
    written = decider.checkpoint()

    assert restoration.records == len(oracle_events(commands)), "no snapshot: the whole log"
    assert {output.key for output in written} == {c.loan_id.encode() for c in commands}
    marks = {decode_snapshot(output.value).events_from for output in written}  # type: ignore[union-attr]
    assert marks == {0}, "until the baseline is acknowledged, a restore must fold the whole log"


def test_an_unreadable_snapshot_makes_the_restore_fold_the_whole_log(
    kafka_bootstrap: str,
) -> None:
    settings = settings_for(kafka_bootstrap, processing_guarantee="at_least_once")
    command = repayment_cycle(loans=1, seed=16)[0]
    event = oracle_events([command])[(command.loan_id, 1)]
    writer = Producer(settings.producer_config())
    writer.produce(settings.topic("ledger.events"), event, command.loan_id.encode(), partition=0)
    writer.produce(settings.topic("ledger.loan-states"), b"{garbled", b"x", partition=0)
    writer.flush(10)

    restored = restore_partition(settings, 0, committed=0)

    assert not restored.from_snapshots
    assert set(restored.loans.states) == {command.loan_id}


# ---- the business clock -------------------------------------------------------------------

CLOCK_LOANS = 40


def _a_month_of_ticks() -> list[Command | CloseBusinessDayForPartition]:
    """Loans falling due over ten days, a tick per day for a month, then a request from each
    loan's app: the loans due are closed by the ticks, the others catch up on their request."""
    opens: list[Command | CloseBusinessDayForPartition] = [
        open_loan(f"open-{n}", loan_id=f"C{n}", first_due_date=date(2026, 2, 1 + n % 10))
        for n in range(CLOCK_LOANS)
    ]
    start = date(2026, 1, 20)
    ticks = [business_day_ticks(start + timedelta(days=d), 1, T0)[0] for d in range(CLOCK_LOANS)]
    requests = [request(f"app-{n}", loan_id=f"C{n}") for n in range(CLOCK_LOANS)]
    return [*opens, *ticks, *requests]  # 3 waves of CLOCK_LOANS


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_the_business_clock_writes_only_what_happens_and_survives_a_restore(
    kafka_bootstrap: str, guarantee: str
) -> None:
    settings = settings_for(kafka_bootstrap, processing_guarantee=guarantee)
    commands = _a_month_of_ticks()
    sent = decide_in_waves(settings, checkpoint_interval_s=0, commands=commands, waves=3)
    whole = whole_log_fold(settings)
    last_tick = commands[2 * CLOCK_LOANS - 1]
    assert isinstance(last_tick, CloseBusinessDayForPartition)

    restored = restore_partition(settings, 0, committed(settings))

    assert committed(settings) == sent
    assert restored.loans.states | restored.resting.states() == whole.states
    clock = restored.day.clock
    assert clock is not None
    assert (clock.command_id, clock.business_date) == (
        last_tick.command_id,
        last_tick.business_date,
    )
    # 40 days closed for 40 loans: one BusinessDayClosed per loan per tick that did something
    # to it (its installment fell due; 3 days later a late fee) and one catch-up on its
    # request; never one per loan and day.
    closes = Counter(event.type for event in _events(settings))["BusinessDayClosed"]
    assert closes == 3 * CLOCK_LOANS, closes
    # The clock is as well found from the commands alone (what a restore does past the record).
    from_commands, _read = ticks_since(settings, 0, None, 0, committed(settings))
    assert from_commands == clock


def _events(settings: LedgerSettings) -> list[Event]:
    found = []
    with LogReader(settings, "ledger.events", partitions=[0]) as reader:
        for batch in reader.batches():
            found += [parse_event(message.value() or b"") for message in batch]
    return found


# ---- the projector's snapshots ---------------------------------------------------------------


@contextmanager
def projecting(settings: LedgerSettings) -> Iterator[Callable[[], None]]:
    """A projector loop running; the call waits until it has committed every event of
    partition 0 written so far. Stopped on exit (its last checkpoint)."""
    projector = BatchProjector(settings, Metrics())
    loop = BatchLoop(settings, projector, "projector", "snap-1")
    stop = threading.Event()
    runner = threading.Thread(target=loop.run, args=(stop,))
    runner.start()

    ends = [0]

    def caught_up() -> None:
        """Until the projector has committed every event of partition 0 now readable: a wave's
        commit markers may land a moment after its offsets are committed, so the read waits for
        events past the last wave's."""
        deadline = time.monotonic() + 90
        end = ends[-1]
        while end <= ends[-1]:
            assert time.monotonic() < deadline, "timed out waiting for the wave's events"
            with LogReader(settings, "ledger.events", partitions=[0]) as reader:
                # past the last record (a transaction's commit marker takes an offset after it)
                end = max(((m.offset() or 0) + 1 for b in reader.batches() for m in b), default=0)
        ends.append(end)
        while _projected(projector) < end:
            assert time.monotonic() < deadline, "timed out waiting for the projector"
            time.sleep(0.1)

    try:
        yield caught_up
    finally:
        stop.set()
        runner.join(60)
    assert not runner.is_alive()


def _projected(projector: BatchProjector) -> int:
    checkpoints = projector.checkpoints.get(0)
    return 0 if checkpoints is None else checkpoints.command_offset


def projected_committed(settings: LedgerSettings) -> int:
    group = f"{settings.group_id}-batched-projector"
    consumer = Consumer(settings.confluent_config() | {"group.id": group})
    try:
        return committed_offsets(consumer, settings.topic("ledger.events"), [0])[0]
    finally:
        consumer.close()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_the_projector_restores_from_its_snapshots_and_the_events_after_them(
    kafka_bootstrap: str, guarantee: str
) -> None:
    """The projector runs while the workload is decided in waves, catching up after each, so
    each wave is a batch and its checkpoint marks where it began: a new projector's restore
    reads the snapshots and only the last wave's events, and has the balances of a fold of the
    whole log."""
    settings = settings_for(kafka_bootstrap, processing_guarantee=guarantee)
    ends: list[int] = []
    with projecting(settings) as caught_up:

        def project_the_wave() -> None:
            caught_up()
            ends.append(projected_committed(settings))

        decide_in_waves(settings, checkpoint_interval_s=0, after_wave=project_the_wave)
    whole = PartitionBooks()
    for event in _events(settings):
        whole.apply(event, 0)

    committed_events = projected_committed(settings)
    restoration = BatchProjector(settings, Metrics()).restore(0, committed_events)
    projector = BatchProjector(settings, Metrics())
    projector.restore(0, committed_events).install()

    assert projector.books[0].balances == whole.balances
    assert projector.books[0].seqs.applied == whole.seqs.applied
    with LogReader(settings, "ledger.projector-states", partitions=[0]) as reader:
        snapshots = sum(map(len, reader.batches()))  # not compacted yet: each one is read
    events_read = restoration.records - snapshots
    assert 0 < events_read <= committed_events - ends[-2], "only the last wave's events"
