"""Builds the events of one decision: stamps each envelope and folds it in as it goes."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from ledger import identity
from ledger.evolve import evolve
from ledger.state import LoanState
from schemas.commands import CommandBase
from schemas.events import Event, Posting


class Recorder:
    """Each emitted event is applied at once, so later events of the same decision see it:
    e.g. a late fee is computed after the installment fell due in the same business day."""

    def __init__(self, state: LoanState, command: CommandBase, command_hash: str) -> None:
        self.state = state
        self.events: list[Event] = []
        self._command = command
        self._command_hash = command_hash

    def envelope(self, postings: Iterable[Posting] = ()) -> dict[str, Any]:
        """The envelope fields of the next event; ids and time derive from the command only."""
        command = self._command
        return {
            "event_id": identity.event_id(command.loan_id, command.command_id, self.state.next_seq),
            "loan_id": command.loan_id,
            "seq": self.state.next_seq,
            "causation_id": command.command_id,
            "causation_hash": self._command_hash,
            "occurred_at": command.issued_at,
            "postings": tuple(postings),
        }

    def emit(self, event: Event) -> None:
        self.events.append(event)
        self.state = evolve(self.state, event)

    @property
    def command_id(self) -> str:
        return self._command.command_id

    @property
    def issued_at(self) -> datetime:
        return self._command.issued_at

    @property
    def currency(self) -> str:
        assert self.state.terms is not None, "postings need an opened loan"
        return self.state.terms.currency

    def posting(self, debit: str, credit: str, amount_minor: int) -> Posting:
        return Posting(
            debit=debit, credit=credit, amount_minor=amount_minor, currency=self.currency
        )
