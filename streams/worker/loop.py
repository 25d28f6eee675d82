"""One consume -> handle -> produce -> commit loop on confluent-kafka, a batch at a time.

Each batch's outputs and its input offsets are committed together: in one Kafka transaction
under exactly_once (KIP-447: the offsets carry the consumer group's generation, so a zombie that
lost its partitions cannot commit), or, under at_least_once, by waiting for every output's ack
before committing the offsets. A stage keeps its state in memory and restores it from the log
whenever it is given partitions (`Stage.restore`, on a thread of its own while the partition is
paused; assignment is cooperative-sticky), so a failed batch is undone by forgetting the state
and restoring it from what was committed.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from streams.settings import LedgerSettings
from streams.worker.deadline import bounded
from streams.worker.restore import committed_offsets

log = logging.getLogger(__name__)

BATCH = 5_000
STATS_INTERVAL_MS = 5_000
POLL_S = 0.02
TXN_TIMEOUT_S = 30.0
# A transaction left open by a process that died blocks read_committed readers until the broker
# aborts it: keep that short. The next incarnation (same transactional id) aborts it at once.
TRANSACTION_TIMEOUT_MS = 10_000
# How long a transaction step is retried through a retriable error (a whole-cluster restart
# takes about a minute here) before the process gives up and its supervisor restarts it.
RETRIABLE_FOR_S = 180.0
# librdkafka#5456 and #5511: send_offsets_to_transaction can block for ever, past its own
# timeout, once the group coordinator it cached was decommissioned (a broker killed and
# restarted; seen in the chaos run on 2.16.0). A step that has not returned by then ends the
# process: its supervisor restarts it, and the new incarnation's init_transactions fences this
# one and aborts its open transaction.
STEP_DEADLINE_S = TXN_TIMEOUT_S + 15


@dataclass(frozen=True, slots=True)
class Output:
    topic: str
    partition: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, str | bytes | None]] | None = None


@dataclass(frozen=True, slots=True)
class Restoration:
    """A partition's state read from the log, not yet taken into the stage."""

    records: int  # records read
    install: Callable[[], None]  # takes it into the stage; called on the loop's thread


class Stage(Protocol):
    """What a loop runs: the decider or the projector."""

    input_topic: str

    def restore(self, partition: int, committed: int) -> Restoration:
        """Read one partition's state from the log, given the committed offset of its input.
        Runs on a restore thread: it must not touch the stage's own state (`install` does)."""

    def forget(self, partitions: list[int]) -> None:
        """Drop the state of partitions this process no longer owns."""

    def handle(self, batch: list[Message]) -> list[Output]:
        """The outputs of a batch of input records, in order; updates the in-memory state."""

    def checkpoint(self, force: bool = False) -> list[Output]:
        """What to write once the batch is committed (inside its transaction under exactly_once,
        after its offsets are committed under at_least_once): the decider's snapshots. `force`
        when the process stops or gives partitions up, so that the next owner reads little."""

    def written(self, topic: str, partition: int, offset: int) -> None:
        """One of the outputs reached the log at `offset`."""


@dataclass
class BatchLoop:
    settings: LedgerSettings
    stage: Stage
    role: str  # "decider" or "projector": names the consumer group and the transactional id
    instance: str
    batch: int = BATCH
    on_batch: Callable[[int], None] = lambda _count: None
    # (topic, partition, records behind) every STATS_INTERVAL_MS for each owned partition
    on_lag: Callable[[str, int, int], None] = lambda _topic, _partition, _lag: None
    # (role, seconds, records read) after every restore
    on_restore: Callable[[str, float, int], None] = lambda _role, _seconds, _read: None
    # Where the loop's consumer comes from: a test injects a broker's wrong answer here.
    make_consumer: Callable[[dict[str, Any]], Consumer] = Consumer
    _assigned: set[int] = field(default_factory=set)  # restored and consumed
    # Assigned, paused while restoring: partition -> (its restore, the committed offset)
    _restoring: dict[int, tuple[Background, int]] = field(default_factory=dict)
    _delivery_errors: list[KafkaError] = field(default_factory=list)
    _producer: Producer | None = None
    _committed: bool = True  # the last batch's offsets were committed (at_least_once)

    @property
    def transactional(self) -> bool:
        return self.settings.processing_guarantee == "exactly_once"

    def run(self, stop: threading.Event) -> None:
        consumer = self.make_consumer(self._consumer_config())
        producer = self._producer = Producer(self._producer_config())
        if self.transactional:
            producer.init_transactions(TXN_TIMEOUT_S)  # aborts what an earlier incarnation left
        consumer.subscribe(
            [self.stage.input_topic],
            on_assign=lambda c, tps: self._on_assign(c, tps),
            on_revoke=lambda _c, tps: self._on_revoke(tps),
            on_lost=lambda _c, tps: self._on_lost(tps),
        )
        try:
            while not stop.is_set():
                self._take_restored(consumer)
                batch = self._owned(consumer.consume(self.batch, timeout=POLL_S))
                if batch:
                    self._process(consumer, producer, batch)
                    self.on_batch(len(batch))
            self._last_checkpoint(consumer, producer)
        finally:
            consumer.close()
            producer.flush(TXN_TIMEOUT_S)

    def _last_checkpoint(self, consumer: Consumer, producer: Producer) -> None:
        """On a clean stop, everything changed since the last checkpoint is written, if the
        last batch's offsets were committed. Under exactly_once, in a transaction of its own
        that carries the consumer's positions (the same offsets again), so that a member of an
        old generation is fenced instead of writing snapshots of partitions it lost."""
        if not self._committed:
            return
        outputs = self.stage.checkpoint(force=True)
        if not outputs:
            return
        if not self.transactional:
            self._send(producer, outputs)
            return
        topic = self.stage.input_topic
        asked = [TopicPartition(topic, p) for p in sorted(self._assigned)]
        positions = [tp for tp in consumer.position(asked) if tp.offset >= 0]
        if not positions:
            return  # nothing consumed since the restore: nothing to fence with, nor to write
        producer.begin_transaction()
        try:
            self._send(producer, outputs)
            group = consumer.consumer_group_metadata()
            producer.send_offsets_to_transaction(positions, group, TXN_TIMEOUT_S)
            producer.commit_transaction(TXN_TIMEOUT_S)
        except KafkaException as error:  # the next owner restores from the earlier marks
            log.warning("%s: the last checkpoint was not written (%s)", self.role, error)
            if error.args[0].txn_requires_abort():  # else fenced: nothing is left to abort
                producer.abort_transaction(TXN_TIMEOUT_S)

    def _process(self, consumer: Consumer, producer: Producer, batch: list[Message]) -> None:
        offsets = _next_offsets(batch)
        if not self.transactional:
            started = time.monotonic()
            self._send(producer, self.stage.handle(batch))
            self._await_acks(producer)  # the previous checkpoint's records too
            # A process paused past half its session may have lost its partitions without being
            # told: its checkpoint waits (the loans stay to write), so that a late write cannot
            # land after the next owner's.
            fresh = time.monotonic() - started < self.settings.session_timeout_s / 2
            self._committed = _commit(consumer, offsets)
            if self._committed and fresh:
                self._send(producer, self.stage.checkpoint())
            return
        producer.begin_transaction()
        try:
            self._send(producer, self.stage.handle(batch))
            self._send(producer, self.stage.checkpoint())
            group = consumer.consumer_group_metadata()
            _retrying(lambda: producer.send_offsets_to_transaction(offsets, group, TXN_TIMEOUT_S))
            _retrying(lambda: producer.commit_transaction(TXN_TIMEOUT_S))
        except KafkaException as error:
            if not error.args[0].txn_requires_abort():
                raise  # fenced, fatal or out of retries: end (the supervisor restarts us)
            log.warning("%s: transaction aborted (%s); rewinding", self.role, error)
            _retrying(lambda: producer.abort_transaction(TXN_TIMEOUT_S))
            self._rewind(consumer)

    def _send(self, producer: Producer, outputs: list[Output]) -> None:
        for output in outputs:
            while True:
                try:
                    producer.produce(
                        output.topic,
                        output.value,
                        output.key,
                        partition=output.partition,
                        headers=output.headers,
                        on_delivery=self._delivered,
                    )
                    break
                except BufferError:  # the local queue is full: let librdkafka send some
                    producer.poll(0.05)
        producer.poll(0)

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._delivery_errors.append(error)
            return
        self.stage.written(message.topic() or "", message.partition() or 0, message.offset() or 0)

    def _await_acks(self, producer: Producer) -> None:
        left = producer.flush(TXN_TIMEOUT_S)
        if left or self._delivery_errors:
            # Never commit past a record whose outputs are not all in the log.
            raise KafkaException(self._delivery_errors[0] if self._delivery_errors else left)

    def _rewind(self, consumer: Consumer) -> None:
        """Undo an aborted batch: the state and the positions go back to the last commit."""
        partitions = sorted(self._assigned)
        self.stage.forget(partitions)
        committed = committed_offsets(consumer, self.stage.input_topic, partitions)
        for partition, offset in committed.items():
            started = time.monotonic()
            restoration = self.stage.restore(partition, offset)
            restoration.install()
            self.on_restore(self.role, time.monotonic() - started, restoration.records)
            consumer.seek(TopicPartition(self.stage.input_topic, partition, offset))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Cooperative-sticky hands over only the partitions that are new to us. Each starts
        paused at its committed offset while a restore thread reads its state: the callback
        returns at once, and the loop goes on polling (the group never waits on a restore)."""
        topic = self.stage.input_topic
        committed = committed_offsets(consumer, topic, [tp.partition for tp in partitions])
        # One read of the committed offsets decides both where the restore stops and where the
        # consumer resumes, so the state and the position can never disagree.
        consumer.incremental_assign([TopicPartition(topic, p, o) for p, o in committed.items()])
        consumer.pause([TopicPartition(topic, p) for p in committed])
        for partition, offset in committed.items():
            restore = Background(functools.partial(self._read, partition, offset))
            self._restoring[partition] = (restore, offset)
        log.info("%s: given partitions %s; restoring them", self.role, sorted(committed))

    def _read(self, partition: int, committed: int) -> tuple[Restoration, float]:
        started = time.monotonic()
        return self.stage.restore(partition, committed), time.monotonic() - started

    def _take_restored(self, consumer: Consumer) -> None:
        """Take in each partition whose restore has finished, and resume consuming it."""
        for partition, (restore, committed) in list(self._restoring.items()):
            if not restore.done():
                continue
            del self._restoring[partition]
            restoration, seconds = restore.result()  # a failed restore ends the process
            restoration.install()
            self._assigned.add(partition)
            # Back to the committed offset: anything fetched while paused was not kept.
            at = TopicPartition(self.stage.input_topic, partition, committed)
            consumer.seek(at)
            consumer.resume([at])
            self.on_restore(self.role, seconds, restoration.records)
            log.info(
                "%s: took partition %d in %.1f s (%d records read)",
                self.role, partition, seconds, restoration.records,
            )  # fmt: skip

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        if self._producer is not None and not self.transactional:
            # What we changed is written, and lands, before the next owner reads the snapshots
            # (never after a refused commit: the snapshots would be ahead of the offsets).
            if self._committed:
                self._send(self._producer, self.stage.checkpoint(force=True))
            self._producer.flush(TXN_TIMEOUT_S)
        self._on_lost(partitions)

    def _on_lost(self, partitions: list[TopicPartition]) -> None:
        """Partitions taken from us (revoked, or lost when our session expired: then they are
        another's already, and nothing more of ours is written for them). A restore still
        running for one of them is left to finish and thrown away."""
        numbers = [tp.partition for tp in partitions]
        for partition in numbers:
            self._restoring.pop(partition, None)
        self._assigned.difference_update(numbers)
        self.stage.forget(numbers)

    def _report_lag(self, statistics: str) -> None:
        """Records behind, from librdkafka's statistics: its `consumer_lag` (last stable offset
        minus committed offset) where it knows the committed offset; under exactly_once the
        offsets are committed through the producer's transaction, which the consumer does not
        see, so there the last stable offset minus the consumer's position."""
        topic = self.stage.input_topic
        partitions = json.loads(statistics).get("topics", {}).get(topic, {}).get("partitions", {})
        for number, figures in partitions.items():
            partition = int(number)
            if partition not in self._assigned:
                continue
            lag = figures.get("consumer_lag", -1)
            stable, position = figures.get("ls_offset", -1), figures.get("app_offset", -1)
            if lag < 0 and stable >= 0 and position >= 0:
                lag = max(0, stable - position)
            if lag >= 0:
                self.on_lag(topic, partition, lag)

    def _owned(self, messages: list[Message]) -> list[Message]:
        kept = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                continue  # librdkafka retries the rest on its own
            if message.partition() in self._assigned:
                kept.append(message)
        return kept

    def _consumer_config(self) -> dict[str, Any]:
        return self.settings.confluent_config() | {
            "group.id": f"{self.settings.group_id}-batched-{self.role}",  # see worker_groups
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "max.partition.fetch.bytes": 4 * 1024 * 1024,
            "fetch.wait.max.ms": 10,
            "session.timeout.ms": int(self.settings.session_timeout_s * 1000),
            # A rebalance moves only the partitions that change owner: the others keep their
            # state and go on (with eager assignment every partition was dropped and restored).
            "partition.assignment.strategy": "cooperative-sticky",
            "statistics.interval.ms": STATS_INTERVAL_MS,
            "stats_cb": self._report_lag,
        }

    def _producer_config(self) -> dict[str, Any]:
        config = self.settings.producer_config() | {"linger.ms": 2}
        if self.transactional:
            config |= {
                "transactional.id": f"{self.settings.group_id}-{self.role}-{self.instance}",
                "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
            }
        return config


class Background:
    """One call on a daemon thread (a restore): a process that is stopping never waits for it."""

    def __init__(self, call: Callable[[], tuple[Restoration, float]]) -> None:
        self._call = call
        self._outcome: tuple[Restoration, float] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="restore")
        self._thread.start()

    def _run(self) -> None:
        try:
            self._outcome = self._call()
        except BaseException as error:  # handed to the loop's thread by result()
            self._error = error

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self) -> tuple[Restoration, float]:
        if self._error is not None:
            raise self._error
        assert self._outcome is not None
        return self._outcome


def _next_offsets(batch: list[Message]) -> list[TopicPartition]:
    """The offset to commit per partition: one past the last record of the batch."""
    last: dict[tuple[str, int], int] = {}
    for message in batch:
        last[(message.topic() or "", message.partition() or 0)] = message.offset() or 0
    return [TopicPartition(topic, p, offset + 1) for (topic, p), offset in last.items()]


def _retrying(call: Callable[[], None], give_up_after_s: float = RETRIABLE_FOR_S) -> None:
    """Call a transaction step again while it fails with a retriable error. A step that times
    out (a broker or the coordinator down) goes on in the background, and librdkafka's contract
    is to call the same step again, not to abort (its examples/transactions.c does this)."""
    deadline = time.monotonic() + give_up_after_s
    while True:
        try:
            bounded(call, STEP_DEADLINE_S)
            return
        except KafkaException as error:
            if not error.args[0].retriable() or time.monotonic() > deadline:
                raise
            log.warning("transaction step failed, retrying: %s", error)
            time.sleep(0.5)


def _commit(consumer: Consumer, offsets: list[TopicPartition]) -> bool:
    try:
        consumer.commit(offsets=offsets, asynchronous=False)
        return True
    except KafkaException as error:
        # A rebalance took the partitions: the outputs are in the log, and the next owner
        # re-decides the same records into the same bytes (the stages are deterministic).
        log.warning("offset commit refused (%s); the next owner repeats the batch", error)
        return False
