"""The decider as a batch stage: commands -> `decide` -> events and one outcome each.

Loan states live in memory and are rebuilt from `ledger.events` when partitions are assigned:
the log is the state. Every event carries, in a header, the offset of the command it came from,
so a rebuild under at_least_once leaves out what commands past the committed offset produced:
those commands are delivered again and re-decided, from the same state, into the same bytes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from confluent_kafka import Message

from ledger import LoanState, Policy, decide, evolve, initial_state
from schemas.events import encode_event, parse_event
from schemas.topics import DLQ, EVENTS, OUTCOMES
from streams.batched.loop import Output
from streams.decider import NotACommand, invalid_outcome, read_command
from streams.dlq import dead_letter_headers
from streams.logread import LogReader
from streams.metrics import Metrics
from streams.settings import LedgerSettings

log = logging.getLogger(__name__)
COMMAND_OFFSET = "ledger-command-offset"


@dataclass
class BatchDecider:
    settings: LedgerSettings
    policy: Policy
    metrics: Metrics
    input_topic: str = ""
    states: dict[int, dict[str, LoanState]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.input_topic = self.settings.topic("ledger.commands")
        self._events = self.settings.topic(EVENTS.name)
        self._outcomes = self.settings.topic(OUTCOMES.name)
        self._dlq = self.settings.topic(DLQ.name)

    def rebuild(self, committed: dict[int, int]) -> None:
        for partition, offset in committed.items():
            self.states[partition] = self._fold_events(partition, offset)

    def forget(self, partitions: list[int]) -> None:
        for partition in partitions:
            self.states.pop(partition, None)

    def handle(self, batch: list[Message]) -> list[Output]:
        outputs: list[Output] = []
        for message in batch:
            outputs.extend(self._decide(message))
        return outputs

    def _decide(self, message: Message) -> list[Output]:
        partition, offset = message.partition() or 0, message.offset() or 0
        command = read_command(message.key(), message.value(), self.settings.max_message_bytes)
        if isinstance(command, NotACommand):
            return self._refuse(message, command)
        loans = self.states[partition]
        state = loans.get(command.loan_id) or initial_state(command.loan_id)
        decision = decide(state, command, self.policy)
        key = command.loan_id.encode()
        headers: list[tuple[str, str | bytes | None]] = [(COMMAND_OFFSET, str(offset).encode())]
        outputs = [
            Output(self._events, partition, key, encode_event(event), headers)
            for event in decision.events
        ]
        outputs.append(
            Output(self._outcomes, partition, key, decision.outcome.model_dump_json().encode())
        )
        for event in decision.events:
            state = evolve(state, event)
        loans[command.loan_id] = state
        self.metrics.commands.labels(type=command.type).inc()
        self.metrics.outcomes.labels(
            status=decision.outcome.status.value, reason=str(decision.outcome.reason or "")
        ).inc()
        return outputs

    def _refuse(self, message: Message, why: NotACommand) -> list[Output]:
        partition, offset = message.partition() or 0, message.offset() or 0
        headers = dead_letter_headers(why.error, self.input_topic, partition, offset)
        self.metrics.dead_letters.labels(source="commands", error=why.error.split(":")[0]).inc()
        outputs = [Output(self._dlq, partition, message.key(), message.value() or b"", headers)]
        if why.answer_to is not None:
            outcome = invalid_outcome(why.answer_to).model_dump_json().encode()
            outputs.append(Output(self._outcomes, partition, why.answer_to[1].encode(), outcome))
            self.metrics.outcomes.labels(status="rejected", reason="invalid_command").inc()
        return outputs

    def _fold_events(self, partition: int, committed: int) -> dict[str, LoanState]:
        """Every loan of the partition as the events of commands below `committed` left it."""
        loans: dict[str, LoanState] = {}
        with LogReader(
            self.settings, EVENTS.name, partitions=[partition], whole_transactions=True
        ) as reader:
            for batch in reader.batches():
                for message in batch:
                    if _command_offset(message) >= committed:
                        continue  # its command comes again and is decided again
                    event = parse_event(message.value() or b"")
                    state = loans.get(event.loan_id) or initial_state(event.loan_id)
                    if event.seq < state.next_seq:
                        continue  # a repeat written when a batch was decided twice
                    loans[event.loan_id] = evolve(state, event)
        return loans


def _command_offset(message: Message) -> int:
    """The offset of the command an event came from; -1 for events of the faust worker."""
    for header in message.headers() or ():
        if header[0] == COMMAND_OFFSET and header[1] is not None:
            return int(header[1])
    return -1
