"""Raw Kafka for the benchmark: throughput-tuned produce and consume, fresh topics, clean-up."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
)
from confluent_kafka import TopicPartition as Partition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.errors import LedgerError
from streams.logread import READER_CONFIG
from streams.settings import LedgerSettings

TIMEOUT_S = 30.0
BATCH = 10_000

# The best case for a Python producer: big batches, a little lingering, no compression (the
# broker is local, the CPU is the bottleneck). acks=all as the ledger's producers use; on one
# broker it costs nothing more than acks=1.
RAW_PRODUCER: dict[str, Any] = {
    "partitioner": "murmur2_random",  # the ledger's partitioning, so keys land alike
    "acks": "all",
    "enable.idempotence": True,  # keeps each key's records in order (replay needs seq order)
    "linger.ms": 5,  # longer only delays the last batch of a burst
    "batch.size": 1_000_000,
    "batch.num.messages": 100_000,
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
    "compression.type": "none",
}


WARM_TOPIC = "bench.warm"


def create_topic(settings: LedgerSettings, name: str, configs: dict[str, str]) -> str:
    """Create `{prefix}{name}` with the project's partition count (unless it exists); return
    its full name once every partition has a leader."""
    topic = settings.topic(name)
    admin = AdminClient(settings.confluent_config())
    future = admin.create_topics(
        [NewTopic(topic, num_partitions=settings.partitions, replication_factor=1, config=configs)]
    )[topic]
    try:
        future.result(timeout=TIMEOUT_S)
    except KafkaException as error:
        if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise
    _wait_for_leaders(settings, topic)
    return topic


def warm(settings: LedgerSettings, producer: Producer, target: str) -> None:
    """Make the producer ready to send to `target`: start-up costs, not throughput. An
    idempotent producer's first send waits for its producer id (half a second at times), so
    one record goes to a scratch topic; the target's metadata (partitions, leaders) is fetched."""
    scratch = create_topic(settings, WARM_TOPIC, {})
    producer.produce(scratch, b"warm", b"warm")
    if producer.flush(TIMEOUT_S) > 0:
        raise LedgerError(f"could not write to {scratch}: is the broker well?")
    producer.list_topics(target, timeout=TIMEOUT_S)


def _wait_for_leaders(settings: LedgerSettings, topic: str) -> None:
    admin = AdminClient(settings.confluent_config())
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        described = admin.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
        if described is not None and described.error is None:
            leaders = [p.leader for p in described.partitions.values()]
            if len(leaders) == settings.partitions and min(leaders) >= 0:
                return
        time.sleep(0.1)
    raise LedgerError(f"topic {topic} has no leader after {TIMEOUT_S:.0f} s: is the broker well?")


def delete_prefixed(settings: LedgerSettings, prefix: str) -> int:
    """Delete every topic whose name starts with `prefix`; return how many."""
    admin = AdminClient(settings.confluent_config())
    doomed = [t for t in admin.list_topics(timeout=TIMEOUT_S).topics if t.startswith(prefix)]
    if not doomed:
        return 0
    for future in admin.delete_topics(doomed, operation_timeout=TIMEOUT_S).values():
        # Already gone, or the broker finishes it later: a leftover topic is harmless.
        with suppress(KafkaException):
            future.result(timeout=TIMEOUT_S)
    return len(doomed)


def produce_all(
    settings: LedgerSettings,
    topic: str,
    records: Iterable[tuple[bytes, bytes]],
    config: dict[str, Any] | None = None,
) -> float:
    """Produce every (key, value) and wait for all acks; return the seconds it took, from a
    producer ready to send (see `warm`)."""
    producer = Producer(settings.confluent_config() | (config or RAW_PRODUCER))
    warm(settings, producer, topic)
    started = time.perf_counter()
    for key, value in records:
        _produce(producer, topic, key, value)
    left = producer.flush(TIMEOUT_S * 4)
    seconds = time.perf_counter() - started
    if left:
        raise LedgerError(f"{left} records to {topic} not acknowledged: is the broker well?")
    return seconds


def _produce(producer: Producer, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value, key)
            return
        except BufferError:
            producer.poll(0.01)  # the local queue is full: let deliveries drain


def consume_all(
    settings: LedgerSettings,
    topic: str,
    expected: int,
    on_batch: Callable[[list[Message]], None] | None = None,
) -> float:
    """Read `expected` records of `topic` from the beginning, in batches, with the project's
    reader settings; return the seconds from creating the consumer to the last record."""
    started = time.perf_counter()
    consumer = Consumer(
        settings.confluent_config() | READER_CONFIG | {"group.id": f"{topic}-bench-reader"}
    )
    try:
        described = consumer.list_topics(topic, timeout=TIMEOUT_S).topics[topic]
        consumer.assign([Partition(topic, p, OFFSET_BEGINNING) for p in described.partitions])
        _drain(consumer, expected, on_batch)
        return time.perf_counter() - started
    finally:
        consumer.close()


def _drain(
    consumer: Consumer, expected: int, on_batch: Callable[[list[Message]], None] | None
) -> None:
    seen, quiet_since = 0, time.monotonic()
    while seen < expected:
        batch = consumer.consume(min(BATCH, expected - seen), timeout=0.1)
        if not batch:
            if time.monotonic() - quiet_since > TIMEOUT_S:
                raise LedgerError(f"read {seen} of {expected} records, then nothing for 30 s")
            continue
        quiet_since = time.monotonic()
        seen += len(batch)
        if on_batch is not None:
            on_batch(batch)
