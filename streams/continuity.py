"""Never skip an input record, whatever faust does across a rebalance.

faust-streaming 0.15.3 can commit past records its agent never saw when a worker leaves the
group: records buffered between the consumer and the agent are acked on shutdown, and the next
owner starts after them (faust-streaming#216, #221; reproduced by
tests/integration/test_pipeline.py::test_faust_216_no_record_skipped_when_a_worker_leaves).
So each agent keeps, per input partition, the offset it expects next, in a changelog-backed
table that moves with the partition. A record beyond it means records were skipped: they are
read back from Kafka (read_committed) and processed first. A record behind it was processed
already and is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from streams.decider import Record
from streams.errors import LedgerError
from streams.metrics import Metrics
from streams.settings import LedgerSettings

log = logging.getLogger(__name__)


class Continuity:
    """`marker_tolerance`: how many offsets a gap may span and still be taken for transaction
    markers rather than skipped records. 0 for topics nobody writes transactionally (commands;
    events under at_least_once); 1 for events under exactly_once, where every decider
    transaction ends with a marker. A single skipped event there is still caught by the
    projector's seq check when the loan's next event arrives."""

    def __init__(
        self, cursors: Any, settings: LedgerSettings, metrics: Metrics, marker_tolerance: int = 0
    ) -> None:
        self._cursors = cursors  # faust Table: "topic:partition" -> next expected offset
        self._tolerance = marker_tolerance
        self._settings = settings
        self._metrics = metrics
        self._reader: Consumer | None = None
        self._lock = threading.Lock()

    def processed_already(self, record: Record) -> bool:
        return record.offset < self._expected(record)

    def _expected(self, record: Record) -> int:
        # No cursor yet: expect the partition's beginning, so even the very first records
        # cannot be skipped unseen (a crash before any cursor was stored lost some here).
        # Re-reading them is harmless: both handlers drop what they have applied already.
        return int(self._cursors.get(_key(record.topic, record.partition), 0))

    def advance(self, record: Record) -> None:
        self._cursors[_key(record.topic, record.partition)] = record.offset + 1

    async def skipped_before(self, record: Record) -> list[Record]:
        """The records between the expected offset and `record` (none when nothing was skipped;
        under exactly_once the gap is often just a transaction marker, which holds no record)."""
        expected = self._expected(record)
        if record.offset - expected <= self._tolerance:
            return []
        missed = await asyncio.to_thread(
            self._read_range, record.topic, record.partition, expected, record.offset
        )
        if missed:
            self._metrics.recovered.inc(len(missed))
            log.warning(
                "faust skipped %d records of %s[%d] (offsets %d..%d); read back from Kafka and "
                "processed first (faust-streaming#216)",
                len(missed), record.topic, record.partition, expected, record.offset - 1,
            )  # fmt: skip
        return missed

    async def read_range(self, topic: str, partition: int, start: int, end: int) -> list[Record]:
        """The committed records of offsets start..end-1 (markers and aborted ones left out)."""
        return await asyncio.to_thread(self._read_range, topic, partition, start, end)

    def _read_range(self, topic: str, partition: int, start: int, end: int) -> list[Record]:
        with self._lock:
            reader = self._reader or self._new_reader()
            self._reader = reader
            reader.assign([TopicPartition(topic, partition, start)])
            found: list[Record] = []
            # The record at `end` is committed (the agent holds it), so reading stops at it:
            # markers and aborted records in between are never returned.
            deadline = time.monotonic() + 60.0
            while time.monotonic() < deadline:
                message = reader.poll(timeout=1.0)
                offset = message.offset() if message is not None else None
                if message is None or message.error() is not None or offset is None:
                    continue
                if offset >= end:
                    return found
                found.append(Record(topic, partition, offset, message.key(), message.value()))
            raise LedgerError(
                f"could not read back {topic}[{partition}] offsets {start}..{end - 1}"
            )

    def _new_reader(self) -> Consumer:
        return Consumer(
            self._settings.confluent_config()
            | {
                "group.id": f"{self._settings.group_id}-gap-reader",
                "enable.auto.commit": False,
                # Only what the agent itself could have seen: never an aborted record.
                "isolation.level": "read_committed",
                "enable.partition.eof": False,
            }
        )


def _key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"
