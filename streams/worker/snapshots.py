"""The decider's snapshots on `ledger.loan-states`: which loans to write after a batch, and the
restore that starts from them instead of from the beginning of the events log.

Every record carries `events_from`, the events offset below which every event of every loan not
yet snapshotted is already covered. A restore reads the snapshot partition, takes the
`events_from` of its last record, and folds only the events from there on (docs/design.md,
"Snapshots"). That holds because the records of one checkpoint land before those of the next:
under exactly_once they commit with their batch, in its transaction; under at_least_once they are
sent only once the batch's offsets are committed, and the next batch waits for their acks before
it commits.

Where no usable snapshot exists (an empty partition, a version this code does not read, a
baseline still being written), the partition is folded from offset 0 and every loan is written
again, a chunk per checkpoint, with `events_from` 0 until the last chunk is acknowledged.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec
from confluent_kafka import Message
from pydantic import ValidationError

from ledger.business_clock import (
    BusinessClock,
    DueCalendar,
    advanced,
    next_close,
    tick_verdict,
)
from ledger.policy import DEFAULT_POLICY, Policy
from ledger.sequence import LoanLog, Verdict
from ledger.snapshot import (
    CLOCK_KEY,
    LoanSnapshot,
    decode_clock,
    decode_snapshot,
    encode_quarantine,
    encode_snapshot,
    resume,
)
from ledger.state import LoanState
from schemas.commands import CloseBusinessDayForPartition, parse_topic_command
from schemas.events import parse_event
from schemas.outcomes import OutcomeStatus
from schemas.topics import COMMANDS, LOAN_STATES
from streams.logread import LogReader
from streams.settings import LedgerSettings
from streams.worker.restore import events_to_restore

log = logging.getLogger(__name__)
COMMAND_OFFSET = "ledger-command-offset"
CLOCK_KEY_BYTES = CLOCK_KEY.encode()
TICK_TYPE = b'"CloseBusinessDayForPartition"'
Decoded = TypeVar("Decoded")
# At most this many loans are written per partition per checkpoint: a full baseline of a large
# partition is spread over several batches instead of one huge transaction.
CHUNK = 5_000


@dataclass
class Checkpoints:
    """One partition's bookkeeping between restores."""

    events_end: int  # one past the last events offset known to be written
    pending_from: int  # events offset that the loans in `touched` may need from
    command_offset: int = 0  # the commands offset committed by the latest batch
    touched: dict[str, None] = field(default_factory=dict)  # loans to write, oldest first
    clock_written: int = -1  # the commands offset of the clock record last written

    def batch_begins(self) -> None:
        if not self.touched:
            self.pending_from = self.events_end

    def take(self) -> tuple[list[str], int]:
        """The loans the next checkpoint writes, and the `events_from` they carry."""
        loans = list(self.touched)[:CHUNK]
        for loan_id in loans:
            del self.touched[loan_id]
        return loans, self.pending_from


@dataclass
class PartitionDay:
    """A partition's business clock, and its loans by the date a close next does something."""

    clock: BusinessClock | None
    calendar: DueCalendar


@dataclass(frozen=True, slots=True)
class Restored:
    loans: LoanLog
    checkpoints: Checkpoints
    resting: Resting
    day: PartitionDay
    snapshots_read: int
    events_read: int
    from_snapshots: bool


class Resting:
    """One partition's loans at rest (`LoanState.at_rest`: paid off, nothing in flight), kept as
    their compressed snapshot instead of a state: most of a lender's book, at a fraction of the
    memory. A command for one unpacks it first."""

    def __init__(self) -> None:
        self._packed: dict[str, bytes] = {}

    def __len__(self) -> int:
        return len(self._packed)

    def __contains__(self, loan_id: object) -> bool:
        return loan_id in self._packed

    def keep(self, loans: LoanLog, loan_id: str, snapshot: bytes) -> None:
        """Take the loan out of `loans`, keeping `snapshot`, its encoded snapshot."""
        self._packed[loan_id] = zlib.compress(snapshot, 1)
        del loans.states[loan_id]

    def wake(self, loans: LoanLog, loan_id: str) -> None:
        """Put a resting loan back into `loans` (nothing happens if it is not resting)."""
        packed = self._packed.pop(loan_id, None)
        if packed is None:
            return
        loans.states[loan_id] = _unpack(packed)

    def states(self) -> dict[str, LoanState]:
        """Every resting loan's state, unpacked (for checks: it costs a decode each)."""
        return {loan_id: _unpack(packed) for loan_id, packed in self._packed.items()}

    def lay_down(self, loans: LoanLog, but: Collection[str]) -> None:
        """Pack away every loan at rest in `loans`, but those in `but` (their snapshot is still
        to be written: the checkpoint packs them then) and the quarantined."""
        resting = [
            loan_id
            for loan_id, state in loans.states.items()
            if state.at_rest and loan_id not in but and loan_id not in loans.quarantined
        ]
        for loan_id in resting:
            self.keep(loans, loan_id, encode_snapshot(loans.states[loan_id], events_from=0))


def _unpack(packed: bytes) -> LoanState:
    snapshot = decode_snapshot(zlib.decompress(packed))
    assert snapshot is not None, "a resting loan was packed by this code's own version"
    assert snapshot.state is not None, "a quarantined loan is never packed"
    return snapshot.state


def encode_loan(loans: LoanLog, loan_id: str, events_from: int, command_offset: int) -> bytes:
    quarantine = loans.quarantined.get(loan_id)
    if quarantine is not None:
        seq = loans.seqs.applied.get(loan_id, 0)
        return encode_quarantine(quarantine, seq, events_from, command_offset)
    return encode_snapshot(loans.states[loan_id], events_from, command_offset)


def restore_partition(
    settings: LedgerSettings, partition: int, committed: int, policy: Policy = DEFAULT_POLICY
) -> Restored:
    """Every loan of the partition, and its business clock, as the commands below `committed`
    left them."""
    loans = LoanLog()
    found = _read_snapshots(settings, partition) or Found()
    for snapshot in found.loans.values():
        resume(loans, snapshot)
    touched: dict[str, None] = {}
    events = 0
    with events_to_restore(settings, partition, start=found.start) as reader:
        for batch in reader.batches():
            events += len(batch)
            for message in batch:
                if command_offset(message) >= committed:  # its command comes again
                    continue
                loan_id = fold_one(loans, message)
                if loan_id is not None:
                    touched[loan_id] = None
        end = reader.cuts[partition]
    if found.start == 0:  # a baseline: every loan is written again
        touched = dict.fromkeys([*loans.states, *loans.quarantined])
    clock, ticks = ticks_since(settings, partition, found.clock, found.clock_offset, committed)
    calendar = DueCalendar()
    for loan_id, state in loans.states.items():
        calendar.plan(loan_id, next_close(state, policy))
    resting = Resting()
    resting.lay_down(loans, but=touched)
    return Restored(
        loans,
        Checkpoints(end, found.start, committed, touched),
        resting,
        PartitionDay(clock, calendar),
        found.read,
        events + ticks,
        from_snapshots=found.start > 0,
    )


@dataclass
class Found:
    """What a partition's snapshot records say."""

    loans: dict[str, LoanSnapshot] = field(default_factory=dict)  # each loan's latest
    clock: BusinessClock | None = None
    clock_offset: int = 0  # the clock holds every tick below this commands offset
    start: int = 0  # where the events are read from; 0: the whole log
    read: int = 0  # records read


def _read_snapshots(settings: LedgerSettings, partition: int) -> Found | None:
    """The partition's snapshots; None when the partition cannot be restored from them."""
    found = Found()
    marked = read_marked(settings, LOAN_STATES.name, partition, lambda m: _take(found, m))
    if marked is None:
        return None
    found.start, found.read = marked.start, marked.read
    if found.clock is None:  # no tick was accepted below the last checkpoint's offset
        found.clock_offset = max(0, marked.highest)
    return found


def _take(found: Found, message: Message) -> tuple[int, int] | None:
    """One snapshot record into `found`: its mark and offset, or None if it is unusable."""
    if message.key() == CLOCK_KEY_BYTES:
        clock = decode_record(message, decode_clock)
        if clock is None:
            return None
        found.clock, found.clock_offset = clock.clock, clock.command_offset
        return clock.events_from, clock.command_offset
    snapshot = decode_record(message, decode_snapshot)
    if snapshot is None:
        return None
    found.loans[snapshot.loan_id] = snapshot
    return snapshot.events_from, snapshot.command_offset


@dataclass(frozen=True, slots=True)
class Marked:
    start: int  # where the events are read from (> 0)
    highest: int  # the highest input offset a record was written at
    read: int  # records read


def read_marked(
    settings: LedgerSettings,
    base_topic: str,
    partition: int,
    take: Callable[[Message], tuple[int, int] | None],
) -> Marked | None:
    """Read a partition of snapshot records in offset order. `take` keeps a record and returns
    its (events_from, input offset), or None if it cannot be used. None when the partition
    cannot be restored from its records: one is unusable, or there is no mark above 0."""
    mark, read = Mark(), 0
    reader = LogReader(settings, base_topic, partitions=[partition], whole_transactions=True)
    with reader:
        for batch in reader.batches():
            read += len(batch)
            for message in batch:
                taken = take(message)
                if taken is None:
                    return None
                mark.saw(*taken)
    return None if mark.start <= 0 else Marked(mark.start, mark.highest_command, read)


def ticks_since(
    settings: LedgerSettings,
    partition: int,
    clock: BusinessClock | None,
    start: int,
    committed: int,
) -> tuple[BusinessClock | None, int]:
    """The clock once the ticks in commands [start, committed) are applied, and the records
    read. Under at_least_once the clock's record can lag the committed offset by the batches
    since the last checkpoint (and on a baseline it is read from the partition's beginning)."""
    if start >= committed:
        return clock, 0
    read, policy = 0, settings.policy()
    reader = LogReader(
        settings, COMMANDS.name, starts={partition: start}, stops={partition: committed},
        partitions=[partition],
    )  # fmt: skip
    with reader:
        for batch in reader.batches():
            read += len(batch)
            for message in batch:
                clock = _tick_applied(clock, message, partition, policy)
    return clock, read


def _tick_applied(
    clock: BusinessClock | None, message: Message, partition: int, policy: Policy
) -> BusinessClock | None:
    value = message.value() or b""
    if TICK_TYPE not in value:  # cheap: nearly every command is a loan's
        return clock
    try:
        command = parse_topic_command(value)
    except ValidationError:
        return clock
    if not isinstance(command, CloseBusinessDayForPartition) or command.partition != partition:
        return clock
    status, _reason = tick_verdict(clock, command, policy)
    return advanced(command) if status is OutcomeStatus.ACCEPTED else clock


@dataclass
class Mark:
    """Where a restore reads the events from, given the snapshot records in offset order: the
    last record's mark, lowered by any record written out of order (a commands offset lower than
    one before it: a paused process's late write under at_least_once), since the events its
    loan needs start no later than its own mark. 0 means: fold the whole log."""

    last: int = 0
    lowest_late: int | None = None
    highest_command: int = -1

    def saw(self, events_from: int, command_offset: int) -> None:
        self.last = events_from
        if command_offset < self.highest_command:
            late = self.lowest_late
            self.lowest_late = self.last if late is None else min(late, self.last)
        self.highest_command = max(self.highest_command, command_offset)

    @property
    def start(self) -> int:
        return self.last if self.lowest_late is None else min(self.last, self.lowest_late)


def decode_record(message: Message, decode: Callable[[bytes], Decoded | None]) -> Decoded | None:
    """A snapshot record decoded, or None (logged) if it cannot be used: unreadable, or of a
    version this code does not read."""
    where = f"{message.topic()} partition {message.partition()} offset {message.offset()}"
    try:
        snapshot = decode(message.value() or b"")
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        log.warning("%s unreadable (%s)", where, error)
        return None
    if snapshot is None:
        log.warning("%s holds a snapshot version this code does not read", where)
    return snapshot


def fold_one(loans: LoanLog, message: Message) -> str | None:
    """Fold one event; the loan it changed (or quarantined), else None."""
    loan_id = (message.key() or b"").decode(errors="replace")
    try:
        event = parse_event(message.value() or b"")
    except ValidationError:
        loans.unreadable(loan_id)
        return loan_id
    verdict = loans.fold(event)
    return loan_id if verdict in (Verdict.NEXT, Verdict.GAP) else None


def command_offset(message: Message) -> int:
    """The offset of the command an event came from; -1 (decided before any commit) for events
    written without the header, by the retired faust engine."""
    for header in message.headers() or ():
        if header[0] == COMMAND_OFFSET and header[1] is not None:
            return int(header[1])
    return -1
