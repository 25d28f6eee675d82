"""What the events log must hold for a list of commands, by the pure core (the oracle that the
pipeline and chaos checks compare the log with; issue 19 asks for one independent of ledger/)."""

from __future__ import annotations

from collections.abc import Iterable

from ledger import DEFAULT_POLICY, LoanState, decide, initial_state
from ledger.business_clock import (
    BusinessClock,
    advanced,
    close_for,
    decide_in_partition,
    next_close,
    tick_verdict,
)
from ledger.decide import Decision
from schemas.commands import CloseBusinessDayForPartition, Command, LoanCommand
from schemas.events import encode_event
from schemas.outcomes import OutcomeStatus


def oracle_events(commands: Iterable[Command]) -> dict[tuple[str, int], bytes]:
    """What the log must hold: each loan's commands decided in order by the pure core."""
    states: dict[str, LoanState] = {}
    expected: dict[tuple[str, int], bytes] = {}
    for command in commands:
        state = states.get(command.loan_id) or initial_state(command.loan_id)
        decision = decide(state, command)
        for event in decision.events:
            expected[(event.loan_id, event.seq)] = encode_event(event)
        states[command.loan_id] = decision.state
    return expected


def oracle_events_by_partition(
    records: Iterable[tuple[int, LoanCommand | CloseBusinessDayForPartition]],
) -> dict[tuple[str, int], bytes]:
    """As `oracle_events`, for a commands log that holds business-day ticks: each partition's
    records in offset order (`records` is (partition, command) in that order), with the
    partition's clock. A tick closes the day at once for the loans it does something to
    (`next_close`), every other loan catches up before its next command
    (`ledger.business_clock`, what the decider's shell does around it)."""
    states: dict[str, LoanState] = {}
    clocks: dict[int, BusinessClock] = {}
    expected: dict[tuple[str, int], bytes] = {}

    def keep(decision: Decision) -> None:
        for event in decision.events:
            expected[(event.loan_id, event.seq)] = encode_event(event)
        states[decision.state.loan_id] = decision.state

    loans_of: dict[int, set[str]] = {}
    for partition, command in records:
        if isinstance(command, CloseBusinessDayForPartition):
            status, _reason = tick_verdict(clocks.get(partition), command, DEFAULT_POLICY)
            if status is not OutcomeStatus.ACCEPTED:
                continue
            clock = clocks[partition] = advanced(command)
            for loan_id in sorted(loans_of.get(partition, ())):
                due = next_close(states[loan_id], DEFAULT_POLICY)
                if due is not None and due <= clock.business_date:
                    decision = close_for(states[loan_id], clock, DEFAULT_POLICY)
                    if decision is not None:
                        keep(decision)
            continue
        loans_of.setdefault(partition, set()).add(command.loan_id)
        state = states.get(command.loan_id) or initial_state(command.loan_id)
        keep(decide_in_partition(state, command, clocks.get(partition), DEFAULT_POLICY))
    return expected
