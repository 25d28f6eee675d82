"""Smoke tests: the broker the fixture provides is real, and transactions work on it."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from tests.integration.kafka_helpers import create_topics, read_all, unique
from tests.integration.pipeline import read_topic

pytestmark = pytest.mark.integration


def test_admin_client_creates_a_topic_with_its_configs(kafka_bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    name = unique("smoke.admin")
    topic = NewTopic(name, num_partitions=3, replication_factor=1, config={"retention.ms": "-1"})
    admin.create_topics([topic])[name].result(timeout=30)

    assert len(admin.list_topics(name, timeout=10).topics[name].partitions) == 3
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["retention.ms"].value == "-1"


def test_confluent_transaction_commit_is_seen_and_abort_is_not(kafka_bootstrap: str) -> None:
    topic = unique("smoke.tx.confluent")
    create_topics(kafka_bootstrap, topic)
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": unique("smoke-tx")}
    )
    producer.init_transactions(30)

    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"committed")
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"aborted")
    # Flush first: librdkafka purges records still queued on abort, and then the log would hold
    # no aborted record for read_committed to hide.
    producer.flush(30)
    producer.abort_transaction(30)

    values = [m.value() for m in read_all(kafka_bootstrap, topic, expected=1)]
    assert values == [b"committed"]
    # read_uncommitted does see the aborted record: the filter above is the broker's doing.
    uncommitted = read_all(kafka_bootstrap, topic, expected=2, isolation="read_uncommitted")
    assert [m.value() for m in uncommitted] == [b"committed", b"aborted"]


def test_aiokafka_transaction_commit_is_seen_and_abort_is_not(kafka_bootstrap: str) -> None:
    topic = unique("smoke.tx.aiokafka")
    create_topics(kafka_bootstrap, topic)

    async def produce() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, transactional_id=unique("smoke-aiotx")
        )
        await producer.start()
        try:
            async with producer.transaction():
                await producer.send_and_wait(topic, b"committed", key=b"k")
            await producer.begin_transaction()
            await producer.send_and_wait(topic, b"aborted", key=b"k")
            await producer.abort_transaction()
        finally:
            await producer.stop()

    asyncio.run(produce())
    values = [m.value() for m in read_all(kafka_bootstrap, topic, expected=1)]
    assert values == [b"committed"]


def test_a_checkers_read_is_the_whole_committed_topic_never_a_prefix(kafka_bootstrap: str) -> None:
    """`read_topic` ends at each partition's end (PARTITION_EOF), past transaction markers and
    empty partitions; it once ended at the first quiet half second and handed a saga check a
    prefix of the events log (CI, 2026-11-26). It fails rather than return a part."""
    topic = unique("smoke.read")
    create_topics(kafka_bootstrap, topic, partitions=3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": unique("rd")})
    producer.init_transactions(30)
    for start in range(0, 3_000, 1_000):  # committed transactions: each ends with a marker
        producer.begin_transaction()
        for n in range(start, start + 1_000):
            producer.produce(topic, key=b"k", value=str(n).encode(), partition=0)
        producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"aborted", partition=0)
    producer.flush(30)
    producer.abort_transaction(30)
    plain = Producer({"bootstrap.servers": kafka_bootstrap})
    for n in range(500):
        plain.produce(topic, value=f"p{n}".encode(), partition=2)
    assert plain.flush(30) == 0  # partition 1 stays empty

    records = read_topic(kafka_bootstrap, topic, 3, until=0, timeout_s=60)

    values = [value or b"" for _key, value, _partition, _offset in records]
    assert sorted(values) == sorted(
        [str(n).encode() for n in range(3_000)] + [f"p{n}".encode() for n in range(500)]
    )
    with pytest.raises(AssertionError, match="3500 records read"):
        read_topic(kafka_bootstrap, topic, 3, until=3_501, timeout_s=3)
