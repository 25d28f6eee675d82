"""Command streams for the integration tests: realistic per-loan sequences, reproducible."""

from __future__ import annotations

import random
from datetime import date

from ledger import LoanState, decide, evolve, initial_state
from schemas.commands import Command, Source
from tests.support.builders import close_day, open_loan, request, success

FIRST_DUE = date(2026, 2, 1)


class LoanScript:
    """Builds one loan's commands, deciding them locally to learn attempt ids and amounts."""

    def __init__(self, loan_id: str, rng: random.Random) -> None:
        self.loan_id = loan_id
        self.rng = rng
        self.state: LoanState = initial_state(loan_id)

    def _keep(self, command: Command) -> Command:
        for event in decide(self.state, command).events:
            self.state = evolve(self.state, event)
        return command

    def open(self) -> Command:
        principal = self.rng.randrange(100_000, 5_000_000)
        term = self.rng.choice((3, 6, 12))
        return self._keep(
            open_loan(
                f"open-{self.loan_id}", self.loan_id, principal_minor=principal, term_months=term
            )
        )

    def close_first_day(self) -> Command:
        return self._keep(
            close_day(FIRST_DUE, command_id=f"close-{self.loan_id}-1", loan_id=self.loan_id)
        )

    def request(self, source: Source) -> Command:
        return self._keep(
            request(f"req-{source.value}-{self.loan_id}", source, loan_id=self.loan_id)
        )

    def succeed_in_flight(self) -> Command:
        attempt = self.state.in_flight
        assert attempt is not None, f"{self.loan_id}: no attempt in flight"
        return self._keep(
            success(
                f"ok-{self.loan_id}", attempt.attempt_id, attempt.amount_minor, loan_id=self.loan_id
            )
        )


def repayment_cycle(loans: int, seed: int = 7) -> list[Command]:
    """Five commands a loan, phase by phase across loans so every partition is busy at once:
    open, close the first due day, an app request, a collection request that must be refused
    (`deduction_in_progress`), and the channel's success."""
    rng = random.Random(seed)
    scripts = [LoanScript(f"loan-{seed}-{n:05d}", rng) for n in range(loans)]
    phases = [
        [s.open() for s in scripts],
        [s.close_first_day() for s in scripts],
        [s.request(Source.APP) for s in scripts],
        [s.request(Source.COLLECTION) for s in scripts],
        [s.succeed_in_flight() for s in scripts],
    ]
    return [command for phase in phases for command in phase]
