"""A stage's restore is never partial (issue 13), on a real broker.

Two ways a decider came to decide commands against a state that lacked loans, in the
exactly_once chaos run: an errored answer to `committed()` read as "nothing committed", and a
rebuild cut at the last stable offset while the transaction its committed offsets cover still
had no commit marker on the events partition. Each test below fails without its fix.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, Producer, TopicPartition

from ledger import initial_state
from schemas.events import encode_event
from streams.errors import LedgerError
from streams.metrics import Metrics
from streams.settings import LedgerSettings
from streams.topics import ensure_topics
from streams.worker.decider import BatchDecider
from streams.worker.loop import BatchLoop, Restoration
from streams.worker.restore import committed_offsets
from streams.worker.snapshots import COMMAND_OFFSET
from tests.integration.kafka_helpers import unique
from tests.support.builders import open_loan, when

pytestmark = pytest.mark.integration


def settings_for(bootstrap: str, **overrides: Any) -> LedgerSettings:
    prefix = unique("restore") + "."
    values: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "topic_prefix": prefix,
        "partitions": 1,
        "processing_guarantee": "exactly_once",
        "session_timeout_s": 6,
    }
    settings = LedgerSettings(**(values | overrides))
    ensure_topics(settings)
    return settings


def commit_for_group(settings: LedgerSettings, group: str, topic: str, offset: int) -> None:
    consumer = Consumer(settings.confluent_config() | {"group.id": group})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        consumer.close()


@dataclass(frozen=True)
class ErroredAnswer:
    """What librdkafka hands back for a partition it could not fetch the offset of: the
    partition, OFFSET_INVALID, and the error (TopicPartition's own `error` cannot be set)."""

    topic: str
    partition: int
    offset: int = OFFSET_INVALID
    error: KafkaError = field(default_factory=lambda: KafkaError(KafkaError._TIMED_OUT))


class ErroringConsumer(Consumer):
    """A real consumer whose first `errors` answers to `committed()` carry a partition error,
    as librdkafka gives while the group coordinator moves."""

    errors = 3

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> Any:
        if ErroringConsumer.errors > 0:
            ErroringConsumer.errors -= 1
            return [ErroredAnswer(tp.topic, tp.partition) for tp in partitions]
        return super().committed(partitions, timeout=timeout)


class RecordingStage:
    """A stage that remembers what it was told to rebuild and what it was then handed."""

    def __init__(self, topic: str) -> None:
        self.input_topic = topic
        self.rebuilt: list[dict[int, int]] = []
        self.first_offsets: list[int] = []

    def restore(self, partition: int, committed: int) -> Restoration:
        self.rebuilt.append({partition: committed})
        return Restoration(0, lambda: None)

    def forget(self, partitions: list[int]) -> None:
        pass

    def handle(self, batch: list[Any]) -> list[Any]:
        self.first_offsets.extend(message.offset() for message in batch)
        return []

    def checkpoint(self, force: bool = False) -> list[Any]:
        return []

    def written(self, topic: str, partition: int, offset: int) -> None:
        pass


def test_an_errored_committed_answer_is_asked_again_never_read_as_nothing_committed(
    kafka_bootstrap: str,
) -> None:
    settings = settings_for(kafka_bootstrap, processing_guarantee="at_least_once")
    commands = settings.topic("ledger.commands")
    producer = Producer(settings.producer_config())
    for n in range(10):
        producer.produce(commands, f"record {n}".encode(), b"k", partition=0)
    producer.flush(10)
    stage = RecordingStage(commands)
    loop = BatchLoop(settings, stage, "decider", "t1", make_consumer=ErroringConsumer)
    commit_for_group(settings, loop._consumer_config()["group.id"], commands, 7)
    ErroringConsumer.errors = 3
    stop = threading.Event()
    runner = threading.Thread(target=loop.run, args=(stop,))
    runner.start()
    deadline = time.monotonic() + 60
    while not stage.first_offsets and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    runner.join(30)
    assert stage.rebuilt == [{0: 7}], "the rebuild must start from the real committed offset"
    assert stage.first_offsets[:1] == [7], "the consumer must resume where the rebuild stopped"


def test_a_committed_offsets_read_that_keeps_failing_ends_rather_than_guesses(
    kafka_bootstrap: str,
) -> None:
    settings = settings_for(kafka_bootstrap)
    consumer = ErroringConsumer(settings.confluent_config() | {"group.id": unique("g")})
    ErroringConsumer.errors = 1_000
    try:
        with pytest.raises(LedgerError, match="committed offsets"):
            committed_offsets(consumer, settings.topic("ledger.commands"), [0], give_up_after_s=2)
    finally:
        ErroringConsumer.errors = 0
        consumer.close()


def test_a_rebuild_waits_for_the_commit_marker_of_a_transaction_its_offsets_cover(
    kafka_bootstrap: str,
) -> None:
    """The committed offsets say the OpenLoan at offset 0 was decided; its events sit on the
    events partition in a transaction whose commit marker has not landed yet (here: the commit
    is held back by the test). A rebuild cut at the last stable offset misses the loan; the
    rebuild must wait for the marker and include it."""
    settings = settings_for(kafka_bootstrap)
    command = open_loan(loan_id="L-restore-1")
    decision = when(initial_state(command.loan_id), command)
    writer = Producer(settings.producer_config() | {"transactional.id": unique("held")})
    writer.init_transactions(10)
    writer.begin_transaction()
    for event in decision.events:
        writer.produce(
            settings.topic("ledger.events"),
            encode_event(event),
            command.loan_id.encode(),
            partition=0,
            headers=[(COMMAND_OFFSET, b"0")],
        )
    writer.flush(10)  # written, not yet committed: the marker is what is held back

    decider = BatchDecider(settings, settings.policy(), Metrics())
    rebuilt = threading.Thread(target=lambda: decider.restore(0, 1).install())
    rebuilt.start()
    time.sleep(3)
    assert rebuilt.is_alive(), "the rebuild returned before the transaction it needs ended"
    writer.commit_transaction(10)
    rebuilt.join(60)
    assert not rebuilt.is_alive()
    assert command.loan_id in decider.partitions[0].states, "the rebuild left out a transaction"
