"""The seq rule, for every reader of the events log: apply a loan's event only when it is next.

Every event carries its loan's `seq` (1, 2, 3, ... with no gaps). Read in offset order, an event
whose seq is at or below the loan's last applied one is a repeat (a batch decided twice under
at_least_once, or a frozen owner's late copy) and changes nothing. An event whose seq skips one
means the log lacks the missing events: nothing later of that loan can be folded correctly, so
the loan is quarantined, and stays so for this reader until it is rebuilt from a log without
the gap. Unreadable bytes under a loan's key quarantine that loan the same way. The partition
and every other loan go on.

A reader that does not see every event of a loan cannot tell a gap from an event it skipped,
so it applies the repeat half of the rule only: `SeqTracker(partial=True)`. The gateway is one (it
resumes mid-log, at its oldest open work, and folds only the events that open or move work), and
so is `ledger replay` (its fast path never decodes an event without postings, most of the log;
`ledger replay --verify` compares it with the projector, which sees every event).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from ledger.evolve import evolve
from ledger.state import LoanState, initial_state
from schemas.events import Event


class Verdict(Enum):
    NEXT = "next"  # apply it
    REPEAT = "repeat"  # already applied: skip it
    GAP = "gap"  # seq skipped: this event quarantines the loan
    QUARANTINED = "quarantined"  # the loan was quarantined earlier: skip it


@dataclass(frozen=True, slots=True)
class Quarantine:
    """Why a loan is quarantined: the seq expected and what was found instead (None when the
    record could not be read at all)."""

    loan_id: str
    expected_seq: int
    found_seq: int | None

    def describe(self) -> str:
        found = "an unreadable record" if self.found_seq is None else f"seq {self.found_seq}"
        return f"loan {self.loan_id}: expected seq {self.expected_seq}, found {found}"


@dataclass
class SeqTracker:
    """One reader's progress per loan: the last seq applied, and the loans quarantined."""

    applied: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, Quarantine] = field(default_factory=dict)
    partial: bool = False  # the reader sees only some of each loan's events: no gap is known

    def admit(self, loan_id: str, seq: int) -> Verdict:
        """The verdict on the loan's next event read; records NEXT and GAP."""
        if loan_id in self.quarantined:
            return Verdict.QUARANTINED
        last = self.applied.get(loan_id, 0)
        if seq <= last:
            return Verdict.REPEAT
        if seq > last + 1 and not self.partial:
            self.quarantined[loan_id] = Quarantine(loan_id, last + 1, seq)
            return Verdict.GAP
        self.applied[loan_id] = seq
        return Verdict.NEXT

    def unreadable(self, loan_id: str) -> Quarantine:
        """Quarantine a loan whose next record could not be read as an event."""
        found = self.quarantined.get(loan_id)
        if found is None:
            found = Quarantine(loan_id, self.applied.get(loan_id, 0) + 1, None)
            self.quarantined[loan_id] = found
        return found


@dataclass
class LoanLog:
    """Loan states folded from events read in log order, by the seq rule: what the decider's
    rebuild and the reconciler hold. A quarantined loan keeps the state its events had reached
    before the gap; a reader must not act on it."""

    states: dict[str, LoanState] = field(default_factory=dict)
    seqs: SeqTracker = field(default_factory=SeqTracker)

    def fold(self, event: Event) -> Verdict:
        verdict = self.seqs.admit(event.loan_id, event.seq)
        if verdict is Verdict.NEXT:
            state = self.states.get(event.loan_id) or initial_state(event.loan_id)
            self.states[event.loan_id] = evolve(state, event)
        return verdict

    def unreadable(self, loan_id: str) -> Quarantine:
        return self.seqs.unreadable(loan_id)

    @property
    def quarantined(self) -> dict[str, Quarantine]:
        return self.seqs.quarantined
