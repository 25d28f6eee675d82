"""Small helpers the integration tests share: unique names, topic creation, draining a topic."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, KafkaException, Message
from confluent_kafka.admin import AdminClient, NewTopic


def unique(name: str) -> str:
    """A topic or group name no other test (or earlier run on the same broker) uses."""
    return f"{name}.{uuid.uuid4().hex[:10]}"


def create_topics(bootstrap: str, *names: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names]
    )
    for future in futures.values():
        future.result(timeout=30)


def read_all(
    bootstrap: str,
    topic: str,
    *,
    expected: int,
    isolation: str = "read_committed",
    timeout_s: float = 30.0,
    settle_s: float = 1.0,
) -> list[Message]:
    """Read `topic` from the start until `expected` records arrived, then `settle_s` more to
    catch any extra record that should not be there; fail after `timeout_s`."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("reader"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    consumer.subscribe([topic])
    records: list[Message] = []
    deadline = time.monotonic() + timeout_s
    settle_until: float | None = None
    try:
        while time.monotonic() < (settle_until or deadline):
            for message in consumer.consume(num_messages=500, timeout=0.2):
                if message.error():
                    raise KafkaException(message.error())
                records.append(message)
            if len(records) >= expected and settle_until is None:
                settle_until = time.monotonic() + settle_s
    finally:
        consumer.close()
    return records
