"""Session fixtures: one real Kafka broker for every integration test, never a mock."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.dev.localkafka import BrokerError, LocalBroker, broker_answers, free_port

# The integration harness asserts in its own modules: rewritten, a failed check there shows the
# values it compared (the CI's bare `AssertionError` from saga.assert_books said nothing).
pytest.register_assert_rewrite(
    "tests.support.chaos",
    "tests.integration.hostile",
    "tests.integration.pipeline",
    "tests.integration.saga",
)


NO_BROKER_HELP = (
    "no Kafka broker for the integration tests: set KAFKA_BOOTSTRAP_SERVERS to a running broker, "
    "or install a JDK 17+ and Maven (the tests then start Apache Kafka from its jars), "
    "or start a Docker daemon (testcontainers)"
)
# Confluent's image of Kafka 3.9; testcontainers' KafkaContainer knows how to boot it in KRaft mode.
TESTCONTAINERS_IMAGE = "confluentinc/cp-kafka:7.9.0"


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        import docker

        docker.from_env().ping()
    except Exception:  # a Docker client without a daemon is the usual case here
        return False
    return True


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker address: the one named by the environment, a local jar broker, or Docker."""
    named = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if named:
        if not broker_answers(named, timeout_s=10):
            pytest.fail(f"KAFKA_BOOTSTRAP_SERVERS={named} does not answer; {NO_BROKER_HELP}")
        yield named
    elif shutil.which("java") and shutil.which("mvn"):
        yield from _local_jar_broker(tmp_path_factory.mktemp("kafka"))
    elif _docker_answers():
        yield from _testcontainers_broker()
    else:
        pytest.fail(NO_BROKER_HELP)


def _local_jar_broker(home: Path) -> Iterator[str]:
    broker = LocalBroker(home=home, port=free_port(), controller_port=free_port())
    try:
        bootstrap = broker.up()
    except BrokerError as error:
        pytest.fail(f"the local Kafka broker did not start: {error}")
    try:
        yield bootstrap
    finally:
        broker.down()


def _testcontainers_broker() -> Iterator[str]:
    from testcontainers.community.kafka import KafkaContainer

    container = KafkaContainer(TESTCONTAINERS_IMAGE).with_kraft()
    # One broker: transactions need their state topic to accept a single in-sync replica.
    container.with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
    container.with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
    with container:
        yield str(container.get_bootstrap_server())
