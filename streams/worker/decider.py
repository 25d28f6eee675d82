"""The decider as a batch stage: commands -> `decide` -> events and one outcome each.

Loan states live in memory. When partitions are assigned they are restored from the loans'
snapshots on `ledger.loan-states` and the events written after them (`streams.worker.snapshots`);
each checkpoint writes the snapshot of every loan a batch changed. Every event carries, in a
header, the offset of the command it came from, so a restore under at_least_once leaves out what
commands past the committed offset produced: those commands are delivered again and re-decided,
from the same state, into the same bytes.

A restore folds each loan's events by the seq rule (`ledger.sequence`): repeats are skipped, and
a gap or an unreadable event quarantines that loan (its snapshot then says so). The commands of
a quarantined loan are refused (`loan_quarantined`) until its log is repaired; every other loan
goes on. An exception while deciding is a bug, not a reason to stop a partition: that command is
dead-lettered with the error and answered `invalid_command`, nothing is written for it, and the
partition goes on. `decide` is a pure function, so a batch decided again raises again into the
same outputs, and the loan's other commands are decided from the state it had.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field

from confluent_kafka import Message

from ledger import Policy, initial_state
from ledger.business_clock import (
    BusinessClock,
    advanced,
    close_for,
    decide_in_partition,
    next_close,
    tick_verdict,
)
from ledger.decide import Decision
from ledger.sequence import LoanLog, Quarantine
from ledger.snapshot import CLOCK_KEY, encode_clock
from schemas.commands import CloseBusinessDayForPartition, Command
from schemas.events import encode_event
from schemas.outcomes import Outcome, OutcomeStatus, RejectionReason, partition_answer, rejected
from schemas.topics import DLQ, EVENTS, LOAN_STATES, OUTCOMES
from streams.dlq import dead_letter_headers
from streams.metrics import Metrics
from streams.settings import LedgerSettings
from streams.worker.commands import NotACommand, invalid_outcome, read_command
from streams.worker.loop import Output, Restoration
from streams.worker.snapshots import (
    COMMAND_OFFSET,
    Checkpoints,
    PartitionDay,
    Resting,
    Restored,
    encode_loan,
    restore_partition,
)

log = logging.getLogger(__name__)
# How often the decider writes its snapshots at most (see `checkpoint`): by default after every
# batch, which measured a lower p99 latency than bursts every 5 s (BENCHMARKS.md, issue 14).
CHECKPOINT_INTERVAL_S = 0.0


@dataclass
class BatchDecider:
    settings: LedgerSettings
    policy: Policy
    metrics: Metrics
    input_topic: str = ""
    partitions: dict[int, LoanLog] = field(default_factory=dict)
    checkpoints: dict[int, Checkpoints] = field(default_factory=dict)
    resting: dict[int, Resting] = field(default_factory=dict)
    days: dict[int, PartitionDay] = field(default_factory=dict)
    checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S
    _checkpointed_at: float = 0.0

    def __post_init__(self) -> None:
        self.input_topic = self.settings.topic("ledger.commands")
        self._events = self.settings.topic(EVENTS.name)
        self._outcomes = self.settings.topic(OUTCOMES.name)
        self._loan_states = self.settings.topic(LOAN_STATES.name)
        self._dlq = self.settings.topic(DLQ.name)
        self._count_command = functools.cache(self.metrics.commands.labels)
        self._count_outcome = functools.cache(self.metrics.outcomes.labels)
        self._count_event = functools.cache(self.metrics.events.labels)
        self._count_dead_letter = functools.cache(self.metrics.dead_letters.labels)

    def restore(self, partition: int, committed: int) -> Restoration:
        started = time.monotonic()
        restored = restore_partition(self.settings, partition, committed, self.policy)
        log.info(
            "decider: partition %d read, %d loans from %d snapshots and %d events (%s) in %.1f s",
            partition, len(restored.loans.states), restored.snapshots_read, restored.events_read,
            "from snapshots" if restored.from_snapshots else "whole log: snapshots follow",
            time.monotonic() - started,
        )  # fmt: skip
        return Restoration(
            restored.snapshots_read + restored.events_read,
            lambda: self._install(partition, restored),
        )

    def _install(self, partition: int, restored: Restored) -> None:
        self.partitions[partition] = restored.loans
        self.checkpoints[partition] = restored.checkpoints
        self.resting[partition] = restored.resting
        self.days[partition] = restored.day
        for quarantine in restored.loans.quarantined.values():
            self._alert(partition, quarantine)

    def forget(self, partitions: list[int]) -> None:
        for partition in partitions:
            self.partitions.pop(partition, None)
            self.checkpoints.pop(partition, None)
            self.resting.pop(partition, None)
            self.days.pop(partition, None)

    def handle(self, batch: list[Message]) -> list[Output]:
        for checkpoints in self.checkpoints.values():
            checkpoints.batch_begins()
        outputs: list[Output] = []
        for message in batch:
            outputs.extend(self._decide(message))
        return outputs

    def checkpoint(self, force: bool = False) -> list[Output]:
        """The snapshots of the loans changed since the last checkpoint (at most a chunk per
        partition), at most every `checkpoint_interval_s` unless forced. Called once a batch's
        offsets are committed, or inside its transaction.

        Why an interval (LEDGER_SNAPSHOT_INTERVAL_S): a snapshot is several times the size of
        the events that changed it, so one per loan per batch writes several times more bytes
        than the events. With an interval a loan changed many times is written once, and a
        restore reads at most the interval's events after the mark; but the writes come in
        bursts, which raised the p99 balance latency at 1,000 commands/s (270-320 ms against
        199-247 ms after every batch), and the pipeline's cycles/s were the same (526, 524)."""
        now = time.monotonic()
        if not force and now - self._checkpointed_at < self.checkpoint_interval_s:
            return []
        self._checkpointed_at = now
        outputs: list[Output] = []
        for partition, checkpoints in self.checkpoints.items():
            loans, resting = self.partitions[partition], self.resting[partition]
            taken, events_from = checkpoints.take()
            offset = checkpoints.command_offset
            for loan_id in taken:
                value = encode_loan(loans, loan_id, events_from, offset)
                outputs.append(Output(self._loan_states, partition, loan_id.encode(), value))
                state = loans.states.get(loan_id)
                if state is not None and state.at_rest and loan_id not in loans.quarantined:
                    resting.keep(loans, loan_id, value)  # its snapshot is written: pack it
            outputs.extend(self._clock_record(partition, checkpoints, events_from))
        return outputs

    def _clock_record(
        self, partition: int, checkpoints: Checkpoints, events_from: int
    ) -> list[Output]:
        """The partition's clock as of this checkpoint's commands offset, if it has one: written
        whenever that offset moved, so that a restore reads at most the commands since the last
        checkpoint to find a tick the record does not hold (`snapshots.ticks_since`)."""
        clock = self.days[partition].clock
        offset = checkpoints.command_offset
        if clock is None or offset == checkpoints.clock_written:
            return []
        checkpoints.clock_written = offset
        value = encode_clock(clock, events_from, offset)
        return [Output(self._loan_states, partition, CLOCK_KEY.encode(), value)]

    def written(self, topic: str, partition: int, offset: int) -> None:
        """A record of ours reached the log at `offset`."""
        checkpoints = self.checkpoints.get(partition)
        if topic == self._events and checkpoints is not None:
            checkpoints.events_end = max(checkpoints.events_end, offset + 1)

    def _decide(self, message: Message) -> list[Output]:
        partition, offset = message.partition() or 0, message.offset() or 0
        checkpoints = self.checkpoints[partition]
        checkpoints.command_offset = offset + 1
        command = read_command(
            message.key(), message.value(), partition, self.settings.max_message_bytes
        )
        if isinstance(command, NotACommand):
            return self._refuse(message, command)
        if isinstance(command, CloseBusinessDayForPartition):
            return self._tick(partition, offset, command)
        loans = self.partitions[partition]
        if command.loan_id in loans.quarantined:
            return [self._outcome(partition, command, quarantined_outcome(command))]
        self.resting[partition].wake(loans, command.loan_id)
        state = loans.states.get(command.loan_id) or initial_state(command.loan_id)
        clock = self.days[partition].clock
        try:
            decision = decide_in_partition(state, command, clock, self.policy)
        except MemoryError:
            raise  # the process, not the command: let the supervisor restart it
        except Exception as error:  # a bug: this command stops, never its partition
            return self._fail(message, command, error)
        self._count(command, decision)
        outputs = self._apply(partition, offset, command.loan_id, decision)
        return [*outputs, self._outcome(partition, command, decision.outcome)]

    def _tick(
        self, partition: int, offset: int, tick: CloseBusinessDayForPartition
    ) -> list[Output]:
        """A partition's business day: closed at once for the loans it does something to (the
        others catch up before their next command: `ledger.business_clock`)."""
        day = self.days[partition]
        status, reason = tick_verdict(day.clock, tick, self.policy)
        self.metrics.commands.labels(tick.type).inc()
        self.metrics.outcomes.labels(status.value, str(reason or "")).inc()
        outputs: list[Output] = []
        closed: int | None = None
        if status is OutcomeStatus.ACCEPTED:
            day.clock = advanced(tick)
            closed = 0
            for loan_id in day.calendar.due(tick.business_date):
                decision = self._close_due(partition, loan_id, day.clock)
                if decision is not None:
                    outputs.extend(self._apply(partition, offset, loan_id, decision))
                    closed += 1
        outcome = partition_answer(tick.command_id, partition, status, reason, closed)
        value = outcome.model_dump_json().encode()
        return [*outputs, Output(self._outcomes, partition, tick.command_id.encode(), value)]

    def _close_due(self, partition: int, loan_id: str, clock: BusinessClock) -> Decision | None:
        loans = self.partitions[partition]
        if loan_id in loans.quarantined:  # out of the calendar until its log is repaired
            return None
        self.resting[partition].wake(loans, loan_id)
        state = loans.states.get(loan_id)
        if state is None:
            return None
        try:
            decision = close_for(state, clock, self.policy)
        except MemoryError:
            raise
        except Exception as error:  # a bug: this loan's close stops, never the tick
            self._alert_error(partition, loan_id, f"closing {clock.business_date}", error)
            return None  # it catches up before its next command, which says the same
        if decision is None:  # its day was closed already: due again when its state says
            self.days[partition].calendar.plan(loan_id, next_close(state, self.policy))
        return decision

    def _apply(self, partition: int, offset: int, loan_id: str, decision: Decision) -> list[Output]:
        """Keep a decision's state and write its events."""
        if decision.events:
            self.partitions[partition].states[loan_id] = decision.state
            self.checkpoints[partition].touched[loan_id] = None
            self.days[partition].calendar.plan(loan_id, next_close(decision.state, self.policy))
        for event in decision.events:
            self._count_event(event.type).inc()
        key = loan_id.encode()
        headers: list[tuple[str, str | bytes | None]] = [(COMMAND_OFFSET, str(offset).encode())]
        return [
            Output(self._events, partition, key, encode_event(event), headers)
            for event in decision.events
        ]

    def _outcome(self, partition: int, command: Command, outcome: Outcome) -> Output:
        value = outcome.model_dump_json().encode()
        return Output(self._outcomes, partition, command.loan_id.encode(), value)

    def _count(self, command: Command, decision: Decision) -> None:
        """Per command: counting through `labels()` cost a tenth of deciding, so the children
        are looked up once per label value."""
        outcome = decision.outcome
        self._count_command(command.type).inc()
        self._count_outcome(outcome.status.value, str(outcome.reason or "")).inc()

    def _refuse(self, message: Message, why: NotACommand) -> list[Output]:
        partition, offset = message.partition() or 0, message.offset() or 0
        headers = dead_letter_headers(why.error, self.input_topic, partition, offset)
        self._count_dead_letter("commands", why.error.split(":")[0]).inc()
        outputs = [Output(self._dlq, partition, message.key(), message.value() or b"", headers)]
        if why.answer_to is not None:
            outcome = invalid_outcome(why.answer_to).model_dump_json().encode()
            key = (why.answer_to[1] or why.answer_to[0]).encode()  # a tick's is its command id
            outputs.append(Output(self._outcomes, partition, key, outcome))
            self._count_outcome(
                OutcomeStatus.REJECTED.value, str(RejectionReason.INVALID_COMMAND)
            ).inc()
        return outputs

    def _fail(self, message: Message, command: Command, error: Exception) -> list[Output]:
        """A command whose decision raised: refused as a record that holds no command would be
        (dead-lettered with the error, answered `invalid_command`, nothing written)."""
        partition = message.partition() or 0
        why = self._alert_error(partition, command.loan_id, f"deciding {command.type}", error)
        return self._refuse(message, NotACommand(why, (command.command_id, command.loan_id)))

    def _alert_error(self, partition: int, loan_id: str, doing: str, error: Exception) -> str:
        """Log a decision that raised; returns the dead letter's `error` header."""
        why = f"error: {doing}: {type(error).__name__}: {' '.join(str(error).split())}"[:1000]
        self.metrics.decide_errors.inc()
        log.exception(
            "ALERT loan %s (commands partition %d): %s raised, a bug. Nothing was written for "
            "it; a command is in ledger.dlq, answered invalid_command (docs/operating.md, "
            "'Dead letters').",
            loan_id, partition, doing,
        )  # fmt: skip
        return why

    def _alert(self, partition: int, quarantine: Quarantine) -> None:
        why = "unreadable" if quarantine.found_seq is None else "gap"
        self.metrics.quarantined.labels(stage="decider", why=why).inc()
        log.error(
            "ALERT loan quarantined (commands partition %d): %s; its commands are refused as "
            "loan_quarantined until its log is repaired (docs/operating.md, 'Quarantined "
            "loans'). Inspect it with `ledger history %s`.",
            partition, quarantine.describe(), quarantine.loan_id,
        )  # fmt: skip


def quarantined_outcome(command: Command) -> Outcome:
    return rejected(command.command_id, command.loan_id, RejectionReason.LOAN_QUARANTINED)
