"""A local single-node Apache Kafka broker (KRaft) run from the jars on Maven Central, no Docker."""

from streams.dev.localkafka.broker import (
    KAFKA_VERSION,
    BrokerError,
    LocalBroker,
    SecureListener,
    broker_answers,
    fetch_jars,
    free_port,
)

__all__ = [
    "KAFKA_VERSION",
    "BrokerError",
    "LocalBroker",
    "SecureListener",
    "broker_answers",
    "fetch_jars",
    "free_port",
]
