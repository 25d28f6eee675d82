"""The business clock of a partition: one tick a day per partition of `ledger.commands`, and
only the loans something happens to write anything (docs/design.md, "The business clock").

A tick (`CloseBusinessDayForPartition`) closes its day for every loan of the partition. Its share
for one loan is a `CloseBusinessDay` with the tick's command id, date and time (`share`), decided
like any other command:
- at once for the loans a close does something to on or before that date (`next_close`: an
  installment falls due, a late fee becomes due); the shell finds them with a `DueCalendar`;
- for every other loan, just before its next command (`decide_in_partition`), so that every
  event of a loan still follows the close of its current business day, as with one
  `CloseBusinessDay` per loan and day. On a day nothing happens to a loan, it writes nothing.

Replay stays deterministic: what a command decides depends on the loan's state and on the
partition's clock, both given by the commands before it in the partition.
"""

from __future__ import annotations

import heapq
from datetime import date, datetime, timedelta

from ledger.business_day import awaiting_payment, too_far_ahead
from ledger.decide import Decision, decide
from ledger.identity import payload_hash
from ledger.policy import Policy
from ledger.state import Frozen, InstallmentState, LoanState
from schemas.commands import CloseBusinessDay, CloseBusinessDayForPartition, Command
from schemas.events import Component
from schemas.outcomes import OutcomeStatus, RejectionReason


class BusinessClock(Frozen, frozen=True, kw_only=True, gc=False):
    """The last tick a partition accepted."""

    business_date: date
    command_id: str
    issued_at: datetime
    payload_hash: str


def tick_verdict(
    clock: BusinessClock | None, tick: CloseBusinessDayForPartition, policy: Policy
) -> tuple[OutcomeStatus, RejectionReason | None]:
    """The tick rule, in the documented precedence: the repeat of the last tick is a duplicate
    (or an idempotency conflict if its payload differs); any other tick for a date not after
    the partition's is stale, including the repeat of an older tick; a tick more than
    `max_days_ahead` after the partition's is too far ahead. A partition's first tick has nothing
    to be compared with and sets its clock: who may send ticks at all is the trust domains'
    business (issue 15), not this rule's."""
    if clock is not None and tick.command_id == clock.command_id:
        if payload_hash(tick) != clock.payload_hash:
            return OutcomeStatus.REJECTED, RejectionReason.IDEMPOTENCY_CONFLICT
        return OutcomeStatus.DUPLICATE, None
    if clock is not None and tick.business_date <= clock.business_date:
        return OutcomeStatus.REJECTED, RejectionReason.STALE_BUSINESS_DATE
    if clock is not None and too_far_ahead(tick.business_date, clock.business_date, policy):
        return OutcomeStatus.REJECTED, RejectionReason.BUSINESS_DATE_TOO_FAR_AHEAD
    return OutcomeStatus.ACCEPTED, None


def advanced(tick: CloseBusinessDayForPartition) -> BusinessClock:
    """The clock once `tick` is accepted."""
    return BusinessClock(
        business_date=tick.business_date,
        command_id=tick.command_id,
        issued_at=tick.issued_at,
        payload_hash=payload_hash(tick),
    )


def share(clock: BusinessClock, loan_id: str) -> CloseBusinessDay:
    """One loan's share of the partition's last tick."""
    return CloseBusinessDay.model_construct(  # built from validated fields: no second check
        command_id=clock.command_id,
        loan_id=loan_id,
        issued_at=clock.issued_at,
        business_date=clock.business_date,
    )


def behind(state: LoanState, clock: BusinessClock) -> bool:
    """Whether the loan's business day is before the partition's (a loan not opened has none)."""
    if not state.opened:
        return False
    return state.business_date is None or state.business_date < clock.business_date


def close_for(state: LoanState, clock: BusinessClock, policy: Policy) -> Decision | None:
    """The loan's share of the clock's day, decided; None if its day is not behind."""
    if not behind(state, clock):
        return None
    return decide(state, share(clock, state.loan_id), policy, clock.business_date)


def decide_in_partition(
    state: LoanState, command: Command, clock: BusinessClock | None, policy: Policy
) -> Decision:
    """`decide`, once the loan's business day has caught up with the partition's. A repeat
    (a command the loan remembers) changes nothing, and is decided as it stands."""
    catch_up = None
    if clock is not None and _catches_up(state, command, clock):
        catch_up = close_for(state, clock, policy)
    today = None if clock is None else clock.business_date
    if catch_up is None:
        return decide(state, command, policy, today)
    decision = decide(catch_up.state, command, policy, today)
    return Decision(decision.outcome, catch_up.events + decision.events, decision.state)


def _catches_up(state: LoanState, command: Command, clock: BusinessClock) -> bool:
    """Not for a repeat, and not before the loan's own CloseBusinessDay for a date at least as
    late as the partition's: that one does the catching up."""
    if command.command_id in state.processed:
        return False
    return not (
        isinstance(command, CloseBusinessDay) and command.business_date >= clock.business_date
    )


def next_close(state: LoanState, policy: Policy) -> date | None:
    """The first date on which closing the day does something to the loan (beyond recording
    the date): an installment falls due, or a late fee becomes due (`ledger.business_day`);
    never a day the loan has closed already."""
    if not state.opened:
        return None
    soonest: date | None = None
    after_grace = timedelta(days=policy.grace_days + 1)
    paying = awaiting_payment(state)  # its fee waits for the attempt's end, a command itself
    for row in state.installments:
        if not row.fell_due:
            when = row.due_date
        elif row.late_fee_minor == 0 and row.number not in paying and _late_fee_ahead(row, policy):
            when = row.due_date + after_grace
        else:
            continue
        if soonest is None or when < soonest:
            soonest = when
    if soonest is not None and state.business_date is not None and soonest <= state.business_date:
        # A fee that fell due while a debit was in flight, or before a reversal reopened its
        # installment, is the next close's (none after date.max: nothing can be planned then).
        soonest = (
            None if state.business_date == date.max else state.business_date + timedelta(days=1)
        )
    return soonest


def _late_fee_ahead(row: InstallmentState, policy: Policy) -> bool:
    """Whether a late close would assess a fee on this installment (as `ledger.business_day`)."""
    owed = row.owed(Component.PRINCIPAL) + row.owed(Component.INTEREST)
    return owed > 0 and policy.late_fee_minor(owed) > 0


class DueCalendar:
    """A partition's loans by `next_close`, so that a tick visits only the loans it does
    something to. A heap with lazy deletion: a loan's superseded entries are dropped when they
    surface, and the heap is rebuilt when they outnumber the live ones."""

    def __init__(self) -> None:
        self._when: dict[str, date] = {}
        self._heap: list[tuple[date, str]] = []

    def __len__(self) -> int:
        return len(self._when)

    def plan(self, loan_id: str, when: date | None) -> None:
        """`loan_id` is next due on `when` (None: never, as things stand)."""
        if when is None:
            self._when.pop(loan_id, None)
            return
        if self._when.get(loan_id) == when:
            return
        self._when[loan_id] = when
        heapq.heappush(self._heap, (when, loan_id))
        if len(self._heap) > 2 * len(self._when) + 1_024:
            self._heap = [(day, loan) for loan, day in self._when.items()]
            heapq.heapify(self._heap)

    def due(self, today: date) -> list[str]:
        """The loans due on or before `today`, in (date, loan id) order; they leave the
        calendar (plan them again once decided)."""
        due: list[str] = []
        heap = self._heap
        while heap and heap[0][0] <= today:
            when, loan_id = heapq.heappop(heap)
            if self._when.get(loan_id) == when:
                del self._when[loan_id]
                due.append(loan_id)
        return due
