"""The client upstream services use: send commands with an idempotent producer, and optionally
wait for each one's outcome.

The JSON contract stays usable without it (docs/design.md, "The contract"); this is the Python
convenience. Keying and partitioning match the processors (murmur2 on the loan id), so a
command's outcome appears on the same partition number of `ledger.outcomes`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from datetime import date, datetime
from types import TracebackType
from typing import Any, Self

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from pydantic import ValidationError

from schemas.commands import CloseBusinessDayForPartition, CommandBase
from schemas.outcomes import Outcome
from schemas.topics import COMMANDS, OUTCOMES
from streams.errors import LedgerError
from streams.settings import LedgerSettings
from streams.topics import unreadable_topic, watermarks

CONNECT_TIMEOUT_S = 10.0
TICK_KEY = b"business-day"  # a tick is routed by its partition; the key only labels it


def business_day_ticks(
    business_date: date, partitions: int, issued_at: datetime
) -> list[CloseBusinessDayForPartition]:
    """The business clock's ticks for one day: one per partition of `ledger.commands`. Their
    ids derive from the date and partition, so a clock that sends a day twice is answered
    `duplicate`, never closes it twice."""
    return [
        CloseBusinessDayForPartition(
            command_id=f"business-day:{business_date.isoformat()}:p{partition}",
            issued_at=issued_at,
            partition=partition,
            business_date=business_date,
        )
        for partition in range(partitions)
    ]


class OutcomeTimeoutError(LedgerError):
    """The command was sent but its outcome did not appear in time: are the workers running?"""


class LedgerClient:
    """Use as a context manager. `send` is fire-and-forget (delivery is still confirmed on
    `flush`/exit); `send_and_wait` returns the outcome. Outcomes are watched from the moment the
    client opens, so none is missed however fast the decider answers."""

    def __init__(self, settings: LedgerSettings, *, watch_outcomes: bool = True) -> None:
        self._settings = settings
        self._producer = Producer(settings.producer_config() | {"error_cb": self._on_error})
        self._errors: list[str] = []
        self._outcomes: dict[str, Outcome] = {}
        self._arrived = threading.Condition()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        if watch_outcomes:
            consumer = self._outcome_consumer()
            self._watcher = threading.Thread(
                target=self._watch, args=(consumer,), name="outcomes", daemon=True
            )
            self._watcher.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def send(self, command: CommandBase | CloseBusinessDayForPartition) -> None:
        """Queue the command; raises LedgerError if Kafka refuses it. A loan's command is keyed
        by its loan id; a business-day tick goes to the partition it names."""
        payload = command.model_dump_json().encode()
        topic = self._settings.topic(COMMANDS.name)
        if isinstance(command, CloseBusinessDayForPartition):
            where: dict[str, Any] = {"key": TICK_KEY, "partition": command.partition}
        else:
            where = {"key": command.loan_id.encode()}
        while True:
            try:
                self._producer.produce(topic, value=payload, **where)
                return
            except BufferError:
                self._producer.poll(0.1)  # the local queue is full: let deliveries drain
            except KafkaException as error:
                raise LedgerError(f"Kafka refused the command: {error}") from error

    def send_many(self, commands: Iterable[CommandBase | CloseBusinessDayForPartition]) -> int:
        count = 0
        for command in commands:
            self.send(command)
            count += 1
        self.flush()
        return count

    def flush(self, timeout_s: float = 30.0) -> None:
        if self._producer.flush(timeout_s) > 0:
            detail = "; ".join(self._errors[-3:]) or "no answer from the broker"
            raise LedgerError(
                f"commands not delivered within {timeout_s:.0f} s ({detail}): is Kafka running "
                f"at {self._settings.bootstrap_servers}?"
            )

    def send_and_wait(
        self, command: CommandBase | CloseBusinessDayForPartition, timeout_s: float = 30.0
    ) -> Outcome:
        self.send(command)
        self.flush()
        return self.wait_for(command.command_id, timeout_s)

    def wait_for(self, command_id: str, timeout_s: float = 30.0) -> Outcome:
        if self._watcher is None:
            raise LedgerError("this client does not watch outcomes (watch_outcomes=False)")
        deadline = time.monotonic() + timeout_s
        with self._arrived:
            while command_id not in self._outcomes:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise OutcomeTimeoutError(
                        f"no outcome for {command_id} within {timeout_s:.0f} s: is a `ledger "
                        "worker` running for this topic prefix?"
                    )
                self._arrived.wait(left)
            return self._outcomes[command_id]

    def close(self) -> None:
        self._producer.flush(10)
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)

    # ---- plumbing ------------------------------------------------------------------------

    def _on_error(self, error: KafkaError) -> None:
        self._errors.append(str(error))

    def _outcome_consumer(self) -> Consumer:
        consumer = Consumer(
            self._settings.confluent_config()
            | {
                "group.id": f"{self._settings.group_id}-client",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "socket.connection.setup.timeout.ms": int(CONNECT_TIMEOUT_S * 1000),
            }
        )
        topic = self._settings.topic(OUTCOMES.name)
        try:
            metadata = consumer.list_topics(topic, timeout=CONNECT_TIMEOUT_S)
        except KafkaException as error:
            consumer.close()
            raise LedgerError(
                f"cannot reach Kafka at {self._settings.bootstrap_servers}: {error}"
            ) from error
        described = metadata.topics.get(topic)
        if described is None or described.error is not None or not described.partitions:
            consumer.close()
            why = None if described is None else described.error
            raise LedgerError(unreadable_topic(topic, why, "run `ledger topics create`"))
        # Explicit end offsets taken now, before anything is sent: an outcome written between
        # the assignment and a lazily resolved "end" would otherwise be skipped.
        consumer.assign([self._end_of(consumer, topic, p) for p in described.partitions])
        return consumer

    @staticmethod
    def _end_of(consumer: Consumer, topic: str, partition: int) -> TopicPartition:
        try:
            end = watermarks(consumer, topic, partition, CONNECT_TIMEOUT_S)[1]
        except KafkaException as error:
            raise LedgerError(f"cannot read the end of {topic}: {error}") from error
        return TopicPartition(topic, partition, end)

    def _watch(self, consumer: Consumer) -> None:
        try:
            while not self._stop.is_set():
                for message in consumer.consume(500, timeout=0.2):
                    self._take(message)
        finally:
            consumer.close()

    def _take(self, message: Message) -> None:
        value = message.value()
        if message.error() is not None or value is None:
            return
        try:
            outcome = Outcome.model_validate_json(value)
        except ValidationError:
            return  # not ours to judge: the outcomes topic is written by the decider only
        with self._arrived:
            self._outcomes[outcome.command_id] = outcome
            self._arrived.notify_all()
