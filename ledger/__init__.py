"""The ledger's pure core: `initial_state`, `decide` and `evolve` per loan, and the balance fold."""

from ledger.decide import Decision, decide
from ledger.evolve import evolve
from ledger.policy import DEFAULT_POLICY, Policy
from ledger.state import LoanState, initial_state

__all__ = ["DEFAULT_POLICY", "Decision", "LoanState", "Policy", "decide", "evolve", "initial_state"]
