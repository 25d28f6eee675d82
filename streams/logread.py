"""Read a topic's committed records in large batches up to a cut: the CLI's window on the log.

The cut of each partition is the end offset seen at the start (the last stable offset, since the
reader is read_committed), or earlier: an offset given per partition, or the first record written
after a moment (Kafka's offsets-for-times lookup). A cut by time therefore keeps a prefix of every
partition: a state the log really passed through, as long as each partition's record timestamps
grow with its offsets (one producer clock per partition, as the decider has).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from streams.errors import LedgerError
from streams.settings import LedgerSettings
from streams.topics import unreadable_topic, watermarks

BATCH = 20_000
POLL_S = 0.05
METADATA_TIMEOUT_S = 10.0
# A partition that stops moving short of its cut this long means the broker went away.
STALL_S = 15.0
# A restore cut at the end of the log waits there for open transactions to end: a producer that
# died leaves its transaction open until the broker aborts it (transaction.timeout.ms, 10 s for
# our workers, checked every 10 s by default), and a commit marker held up by a leader change
# lands once the coordinator's retry gets through.
TRANSACTIONS_STALL_S = 90.0

READER_CONFIG: dict[str, Any] = {
    "enable.auto.commit": False,  # a reader never moves a consumer group's offsets
    "enable.auto.offset.store": False,
    "isolation.level": "read_committed",  # aborted transactions never happened
    "enable.partition.eof": False,
    "auto.offset.reset": "earliest",  # a start below retention reads what is left
    # Reading the log is bound by throughput, not latency: fetch big chunks per partition
    # (the default is 1 MiB), and keep up to 128 MiB prefetched ahead of the decoder.
    "max.partition.fetch.bytes": 8 * 1024 * 1024,
    "fetch.max.bytes": 64 * 1024 * 1024,
    "queued.max.messages.kbytes": 128 * 1024,
    # Once that queue is full, librdkafka waits a whole second (the default) before fetching
    # again; the decoder drains it far sooner. Measured: a third more events per second.
    "fetch.queue.backoff.ms": 10,
    "fetch.wait.max.ms": 100,
}


@dataclass(frozen=True, slots=True)
class LogRecord:
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int
    timestamp_ms: int


class LogReader:
    """A consumer assigned to one topic, each partition from its start up to its cut.

    `starts` maps partition -> first offset (default: the beginning); `stops` maps partition ->
    offset to stop before (unlisted partitions are read to their end); `until_ms` stops each
    partition before its first record stamped later than that moment (ms since the epoch);
    `partitions` limits the read to those partitions.

    With `whole_transactions`, the cut is the end of the log as written (the high watermark, open
    transactions included), not the last stable offset: the read then waits until every
    transaction below the cut has ended, and delivers the records of those that committed. A
    restore needs that: a committed offset can cover a transaction whose commit marker has not yet
    reached the partition the restore reads (the coordinator writes its markers to each partition
    separately), and a cut at the last stable offset would leave that transaction out.
    """

    def __init__(
        self,
        settings: LedgerSettings,
        base_topic: str,
        starts: dict[int, int] | None = None,
        stops: dict[int, int] | None = None,
        until_ms: int | None = None,
        partitions: Collection[int] | None = None,
        whole_transactions: bool = False,
    ) -> None:
        self.topic = settings.topic(base_topic)
        self.all_partitions: list[int] = []
        self._settings = settings
        self._whole_transactions = whole_transactions
        self._stall_s = TRANSACTIONS_STALL_S if whole_transactions else STALL_S
        self._consumer = Consumer(
            settings.confluent_config()
            | READER_CONFIG
            | {"group.id": f"{settings.group_id}-reader"}
        )
        try:
            self.firsts, self.cuts = self._plan(starts or {}, stops or {}, until_ms, partitions)
        except BaseException:
            self._consumer.close()
            raise

    @property
    def total(self) -> int:
        """Offsets to read: an upper bound on the records (transaction markers take offsets)."""
        return sum(max(0, self.cuts[p] - self.firsts[p]) for p in self.cuts)

    def batches(self) -> Iterator[list[Message]]:
        """The records below the cuts, in batches; each partition's in offset order."""
        pending = {p: cut for p, cut in self.cuts.items() if cut > self.firsts[p]}
        self._consumer.assign([TopicPartition(self.topic, p, self.firsts[p]) for p in pending])
        seen = dict.fromkeys(pending, OFFSET_INVALID)
        progress_at, wanted = time.monotonic(), BATCH
        while pending:
            # consume() returns when it has `wanted` messages or after the timeout: asking for no
            # more than what is left spares the wait at the end (markers aside).
            messages = self._consumer.consume(wanted, timeout=POLL_S)
            if messages:
                progress_at = time.monotonic()
            elif time.monotonic() - progress_at > self._stall_s:
                raise LedgerError(self._stall_message(pending))
            kept = self._within_cuts(messages, pending, seen)
            wanted = max(1, min(BATCH, self._left(pending, seen)))
            if kept:
                yield kept

    def _left(self, pending: dict[int, int], seen: dict[int, int]) -> int:
        """Offsets still to read below the cuts (records, and transaction markers)."""
        return sum(cut - max(seen[p], self.firsts[p]) for p, cut in pending.items())

    def _within_cuts(
        self, messages: list[Message], pending: dict[int, int], seen: dict[int, int]
    ) -> list[Message]:
        """The batch without records at or past their partition's cut (updates `pending` and
        `seen`, the positions after the previous batch)."""
        # The consumer's position is past every record it delivered and past transaction
        # markers. A position that did not move past its cut with this batch proves none of
        # the partition's records in it is beyond the cut, so most batches pass unexamined.
        positions = self._positions(seen)
        overshot = {p for p, at in positions.items() if at > self.cuts[p] and at != seen[p]}
        seen.update(positions)
        finished = [p for p, cut in pending.items() if positions[p] >= cut]
        for partition in finished:
            del pending[partition]
        if finished:
            self._consumer.pause([TopicPartition(self.topic, p) for p in finished])
        if any(map(Message.error, messages)):  # map: no Python frame per message
            messages = self._without_errors(messages)
        if overshot:
            cuts = self.cuts
            return [m for m in messages if (m.offset() or 0) < cuts[m.partition() or 0]]
        return messages

    def _positions(self, partitions: dict[int, int]) -> dict[int, int]:
        tracked = self._consumer.position([TopicPartition(self.topic, p) for p in partitions])
        return {tp.partition: tp.offset for tp in tracked}

    def _without_errors(self, messages: list[Message]) -> list[Message]:
        for message in messages:
            error = message.error()
            if error is not None and error.fatal():
                raise LedgerError(f"reading {self.topic} failed: {error.str()}")
        # Anything else (a broker reconnecting) is retried by librdkafka on its own.
        return [m for m in messages if m.error() is None]

    def _plan(
        self,
        starts: dict[int, int],
        stops: dict[int, int],
        until_ms: int | None,
        only: Collection[int] | None,
    ) -> tuple[dict[int, int], dict[int, int]]:
        """(first offset, cut) per partition to read."""
        try:
            partitions = self.all_partitions = self._partitions()
            unknown = sorted((set(stops) | set(only or ())) - set(partitions))
            if unknown:
                raise LedgerError(
                    f"{self.topic} has no partition {unknown[0]} (it has 0-{len(partitions) - 1})"
                )
            wanted = partitions if only is None else sorted(only)
            marks = {p: self._watermarks(p) for p in wanted}
            if self._whole_transactions:
                marks = self._written_ends(marks)
            cuts = {p: min(high, stops.get(p, high)) for p, (_low, high) in marks.items()}
            if until_ms is not None:
                cuts = self._cut_at_time(cuts, until_ms)
        except KafkaException as error:
            raise LedgerError(self._unreachable(error)) from error
        firsts = {p: max(starts.get(p, OFFSET_BEGINNING), low) for p, (low, _h) in marks.items()}
        return firsts, cuts

    def _partitions(self) -> list[int]:
        metadata = self._consumer.list_topics(self.topic, timeout=METADATA_TIMEOUT_S)
        described = metadata.topics.get(self.topic)
        if described is None or described.error is not None or not described.partitions:
            fix = "check --topic-prefix, or create the topics with `ledger topics create`"
            raise LedgerError(
                unreadable_topic(self.topic, None if described is None else described.error, fix)
            )
        return sorted(described.partitions)

    def _watermarks(self, partition: int) -> tuple[int, int]:
        return watermarks(self._consumer, self.topic, partition, METADATA_TIMEOUT_S)

    def _written_ends(self, marks: dict[int, tuple[int, int]]) -> dict[int, tuple[int, int]]:
        """(low, high watermark) per partition: the end as written, open transactions included,
        which a read_committed consumer cannot ask for."""
        uncommitted = Consumer(
            self._settings.confluent_config()
            | {"group.id": f"{self._settings.group_id}-reader"}
            | {"isolation.level": "read_uncommitted"}
        )
        try:
            return {
                p: (low, watermarks(uncommitted, self.topic, p, METADATA_TIMEOUT_S)[1])
                for p, (low, _stable) in marks.items()
            }
        finally:
            uncommitted.close()

    def _cut_at_time(self, cuts: dict[int, int], until_ms: int) -> dict[int, int]:
        # The broker answers with the first offset stamped at or after the given time (-1 when
        # there is none): asking for until_ms + 1 finds the first record after the moment.
        asked = [TopicPartition(self.topic, p, until_ms + 1) for p in cuts]
        cut = dict(cuts)
        for found in self._consumer.offsets_for_times(asked, timeout=METADATA_TIMEOUT_S):
            if found.error is not None:
                raise KafkaException(found.error)
            if found.offset >= 0:
                cut[found.partition] = min(cut[found.partition], found.offset)
        return cut

    def _unreachable(self, error: KafkaException) -> str:
        reason = error.args[0].str() if isinstance(error.args[0], KafkaError) else str(error)
        return (
            f"cannot read {self.topic} from Kafka ({reason}): check that the broker runs and "
            "that --bootstrap-servers (LEDGER_BOOTSTRAP_SERVERS) names it"
        )

    def _stall_message(self, pending: dict[int, int]) -> str:
        positions = self._positions(pending)
        where = ", ".join(f"partition {p} at {positions[p]} of {cut}" for p, cut in pending.items())
        return (
            f"reading {self.topic} made no progress for {self._stall_s:.0f} s ({where}): check "
            "that the broker is up, then run the command again"
        )

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> LogReader:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def read_log(
    settings: LedgerSettings,
    base_topic: str,
    starts: dict[int, int] | None = None,
    stops: dict[int, int] | None = None,
    until_ms: int | None = None,
    partitions: Collection[int] | None = None,
) -> Iterator[LogRecord]:
    """Every committed record up to the cuts (see LogReader), record by record, partitions
    interleaved as the broker serves them."""
    with LogReader(settings, base_topic, starts, stops, until_ms, partitions) as reader:
        for batch in reader.batches():
            for message in batch:
                yield LogRecord(
                    message.key(),
                    message.value(),
                    message.partition() or 0,
                    message.offset() or 0,
                    message.timestamp()[1],
                )


def partition_count(settings: LedgerSettings, base_topic: str) -> int:
    """How many partitions the topic has (LedgerError when it is missing or out of reach)."""
    with LogReader(settings, base_topic, partitions=()) as reader:
        return len(reader.all_partitions)
