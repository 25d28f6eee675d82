"""A loan's snapshot: its state as of one seq, as the decider writes it to `ledger.loan-states`.

The topic is compacted and keyed by loan id, so it holds each loan's latest snapshot, and a
restore reads it instead of the loan's whole history. Each record also says where in the events
partition a restore must start reading (`events_from`: see docs/design.md, "Snapshots"). A
quarantined loan's record says so instead of carrying a state, so that a restore from snapshots
keeps it quarantined.

The projector's snapshots (`ledger.projector-states`, co-partitioned with the events) are per loan
too: `LoanBooks`, the loan's share of every balance it moved (its own accounts, and its part of
the shared accounts' shards), so that each record stands alone and a partition's balances are
their sum.

One more record per partition, under `CLOCK_KEY` (never a loan id), holds the partition's business
clock (`ledger.business_clock`): the last tick it accepted, as of a commands offset.

The value is versioned. A reader upcasts an older version it knows how to; a version it does not
know (older or newer) is `None`, and the partition is then rebuilt from its events.
"""

from __future__ import annotations

import msgspec

from ledger.business_clock import BusinessClock
from ledger.sequence import LoanLog, Quarantine
from ledger.state import LoanState

SNAPSHOT_VERSION = 1
CLOCK_KEY = "~business-clock"  # "~" is outside the loan id alphabet: no loan has this key


class LoanSnapshot(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    version: int = SNAPSHOT_VERSION
    loan_id: str
    seq: int  # the last seq the state reflects (0 when quarantined before any event)
    events_from: int  # a restore of this partition reads the events log from this offset
    command_offset: int = 0  # the commands offset committed when it was written
    state: LoanState | None = None
    quarantine: Quarantine | None = None

    def __post_init__(self) -> None:
        assert (self.state is None) != (self.quarantine is None), (
            f"{self.loan_id}: a snapshot holds a state or a quarantine, not both"
        )


class ClockSnapshot(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    version: int = SNAPSHOT_VERSION
    clock: BusinessClock
    events_from: int  # as a loan snapshot's, so that the record can be the last one read
    command_offset: int  # the clock reflects every tick below this commands offset


class LoanBooks(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The projector's snapshot of one loan: its events up to `seq` are in `moves`."""

    version: int = SNAPSHOT_VERSION
    loan_id: str
    seq: int
    events_from: int  # a restore of this events partition folds from this offset
    events_offset: int  # the events offset committed when it was written
    moves: dict[str, tuple[int, str]]  # balance key -> (the loan's net postings, currency)
    quarantine: Quarantine | None = None  # its balances stop at `seq`


class _Version(msgspec.Struct):
    version: int


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(LoanSnapshot)
_clock_decoder = msgspec.json.Decoder(ClockSnapshot)
_books_decoder = msgspec.json.Decoder(LoanBooks)
_version = msgspec.json.Decoder(_Version)


def encode_snapshot(state: LoanState, events_from: int, command_offset: int = 0) -> bytes:
    return _encoder.encode(
        LoanSnapshot(
            loan_id=state.loan_id,
            seq=state.next_seq - 1,
            events_from=events_from,
            command_offset=command_offset,
            state=state,
        )
    )


def encode_quarantine(
    quarantine: Quarantine, seq: int, events_from: int, command_offset: int = 0
) -> bytes:
    return _encoder.encode(
        LoanSnapshot(
            loan_id=quarantine.loan_id,
            seq=seq,
            events_from=events_from,
            command_offset=command_offset,
            quarantine=quarantine,
        )
    )


def resume(loans: LoanLog, snapshot: LoanSnapshot) -> None:
    """Take a loan into `loans` as its snapshot left it: its events up to `seq` are folded."""
    loans.seqs.applied[snapshot.loan_id] = snapshot.seq
    if snapshot.quarantine is not None:
        loans.seqs.quarantined[snapshot.loan_id] = snapshot.quarantine
    elif snapshot.state is not None:
        loans.states[snapshot.loan_id] = snapshot.state


def decode_snapshot(value: bytes) -> LoanSnapshot | None:
    """The snapshot, or None when its version is not one this code reads (rebuild instead).
    Bytes that are not a snapshot at all raise `msgspec.DecodeError`/`ValidationError`."""
    if _version.decode(value).version != SNAPSHOT_VERSION:
        return None  # no older version exists yet; an upcaster per version goes here
    return _decoder.decode(value)


def encode_clock(clock: BusinessClock, events_from: int, command_offset: int) -> bytes:
    return _encoder.encode(
        ClockSnapshot(clock=clock, events_from=events_from, command_offset=command_offset)
    )


def decode_clock(value: bytes) -> ClockSnapshot | None:
    """As `decode_snapshot`, for the record under `CLOCK_KEY`."""
    if _version.decode(value).version != SNAPSHOT_VERSION:
        return None
    return _clock_decoder.decode(value)


def encode_books(books: LoanBooks) -> bytes:
    return _encoder.encode(books)


def decode_books(value: bytes) -> LoanBooks | None:
    """As `decode_snapshot`, for a record of `ledger.projector-states`."""
    if _version.decode(value).version != SNAPSHOT_VERSION:
        return None
    return _books_decoder.decode(value)
