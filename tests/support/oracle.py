"""What the events log must hold for a list of commands, by the pure core (the oracle that the
pipeline and chaos checks compare the log with; issue 19 asks for one independent of ledger/)."""

from __future__ import annotations

from collections.abc import Iterable

from ledger import LoanState, decide, initial_state
from schemas.commands import Command
from schemas.events import encode_event


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
