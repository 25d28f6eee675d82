"""Restore, the part every stage shares: where a partition resumes, and the events it rebuilds from.

A stage's state is rebuilt from the log whenever it is given partitions (`Stage.restore`); what
it rebuilds and where its consumer resumes must come from one read of the committed offsets, and
the rebuild must read every record of every transaction those offsets cover. Both halves are
here, so that no stage can do one without the other (issue 13: a decider once decided against
a state that lacked loans whose commands it had already committed).
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException, TopicPartition

from schemas.topics import EVENTS
from streams.errors import LedgerError
from streams.logread import LogReader
from streams.settings import LedgerSettings

log = logging.getLogger(__name__)
# How long an assignment keeps asking for the committed offsets (a group coordinator moving
# between brokers answers with errors for a while) before the process ends.
COMMITTED_READ_FOR_S = 120.0
# Each committed-offsets request waits this long at most (librdkafka's own timeout).
REQUEST_TIMEOUT_S = 30.0


def events_to_restore(
    settings: LedgerSettings, partition: int, stop: int | None = None, start: int = 0
) -> LogReader:
    """A reader of the events partition from `start` up to `stop` (default: its end as
    written), through every transaction below the cut: see `LogReader`'s `whole_transactions`."""
    stops = None if stop is None else {partition: stop}
    return LogReader(
        settings,
        EVENTS.name,
        starts={partition: start},
        stops=stops,
        partitions=[partition],
        whole_transactions=True,
    )


def committed_offsets(
    consumer: Consumer,
    topic: str,
    partitions: list[int],
    give_up_after_s: float = COMMITTED_READ_FOR_S,
) -> dict[int, int]:
    """The group's committed offset of each partition; 0 only where it never committed one.

    A read_committed consumer's answer waits for offsets a pending transaction may still commit
    (KIP-447). A timed-out read, or a partition answered with an error, is asked again; past
    `give_up_after_s` it raises: a stage that took an error for "nothing committed" would rebuild
    an empty state and decide commands against it (the exactly_once chaos failure of issue 13).
    """
    deadline = time.monotonic() + give_up_after_s
    asked = [TopicPartition(topic, p) for p in partitions]
    while True:
        try:
            found = consumer.committed(asked, timeout=REQUEST_TIMEOUT_S)
            errors = [tp for tp in found if tp.error is not None]
            if not errors:
                return {tp.partition: _committed_or_start(tp.offset) for tp in found}
            problem: object = errors[0].error
        except KafkaException as error:
            problem = error
        if time.monotonic() > deadline:
            raise LedgerError(f"cannot read the committed offsets of {topic}: {problem}")
        log.warning("reading the committed offsets of %s failed, retrying: %s", topic, problem)
        time.sleep(0.5)


def _committed_or_start(offset: int) -> int:
    """A committed offset, or 0 for OFFSET_INVALID (the group never committed this partition:
    start from the beginning). Any other logical offset is not an answer we expect."""
    if offset >= 0:
        return offset
    if offset == OFFSET_INVALID:
        return 0
    raise LedgerError(f"unexpected committed offset {offset}")
