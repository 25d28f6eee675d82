"""Create the contract's topics (docs/design.md) with their configs, and check co-partitioning."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from schemas.topics import ALL_TOPICS, TopicSpec
from streams.errors import LedgerError
from streams.settings import LedgerSettings

# Errors of a partition whose leader is not elected yet, or not yet known to this client: a
# topic created a moment ago answers "not leader for partition" for a second or so, and
# librdkafka does not flag it retriable.
_LEADERLESS = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
}


def unreadable_topic(topic: str, error: KafkaError | None, fix: str) -> str:
    """Why a topic's metadata named no partitions: the broker hides a topic this principal may
    not describe, which would otherwise read as "does not exist"."""
    if error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        return (
            f"this principal is not authorized for topic {topic}: grant it the ACLs of its "
            "component (`ledger acls`, docs/security.md)"
        )
    return f"topic {topic} does not exist: {fix}"


def watermarks(
    consumer: Consumer, topic: str, partition: int, timeout_s: float = 10.0
) -> tuple[int, int]:
    """(low, high) offsets of a partition, waiting up to `timeout_s` for it to have a leader.
    Raises the KafkaException of the last try when that does not happen in time."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout_s
            )
            return int(low), int(high)
        except KafkaException as error:
            code = error.args[0].code() if isinstance(error.args[0], KafkaError) else None
            if code not in _LEADERLESS or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def ensure_topics(settings: LedgerSettings, timeout_s: float = 30.0) -> list[str]:
    """Create whichever contract topics are missing; return the names created.
    Raises LedgerError when an existing topic has another partition count than needed."""
    admin = AdminClient(settings.confluent_config())
    existing = admin.list_topics(timeout=timeout_s).topics
    specs = list(ALL_TOPICS)
    missing = [spec for spec in specs if settings.topic(spec.name) not in existing]
    _check_partitions(settings, existing, specs)
    if missing:
        futures = admin.create_topics([_new_topic(settings, spec) for spec in missing])
        for future in futures.values():
            try:
                future.result(timeout=timeout_s)
            except KafkaException as error:
                # Another worker starting at the same moment may have won the race.
                if error.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                if error.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                    raise LedgerError(
                        f"topics {', '.join(settings.topic(s.name) for s in missing)} are "
                        "missing or not visible to this principal, and it may not create them: "
                        "create them as an operator (`ledger topics create`), and grant this "
                        "principal its ACLs (`ledger acls`)"
                    ) from error
                raise
    return [settings.topic(spec.name) for spec in missing]


def _new_topic(settings: LedgerSettings, spec: TopicSpec) -> NewTopic:
    return NewTopic(
        settings.topic(spec.name),
        num_partitions=settings.partitions,
        replication_factor=settings.replication_factor,
        config=spec.configs(),
    )


def _check_partitions(
    settings: LedgerSettings, existing: dict[str, Any], specs: list[TopicSpec]
) -> None:
    for spec in specs:
        metadata = existing.get(settings.topic(spec.name))
        if metadata is not None and len(metadata.partitions) != settings.partitions:
            raise LedgerError(
                f"topic {settings.topic(spec.name)} has {len(metadata.partitions)} partitions but "
                f"LEDGER_PARTITIONS is {settings.partitions}: commands, events, outcomes and "
                "balances must be co-partitioned. Set LEDGER_PARTITIONS to match, or use a new "
                "LEDGER_TOPIC_PREFIX."
            )
