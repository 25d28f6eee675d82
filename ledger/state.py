"""A loan's state: everything `decide` needs, rebuilt by folding the loan's events with `evolve`.

The states are frozen msgspec Structs, not pydantic models: the decider builds a new one on every
event, and a Struct is built and copied (`msgspec.structs.replace`) without validation, many
times faster. What they hold is bounded by what happens to the loan, never by its age: see
`ProcessedCommand` for the idempotency record's bound. `ledger.snapshot` encodes them as they are.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from msgspec import Struct, field

from schemas.commands import Source
from schemas.events import Component
from schemas.outcomes import RejectionReason

# The idempotency record keeps the newest this many commands of a loan, and, beyond them, those
# of its opening and of an attempt still in flight (docs/design.md, "Idempotency").
IDEMPOTENCY_WINDOW = 16


class Frozen(
    Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True, gc=False
):
    """No reference cycles are possible in a state (it holds only values): gc=False spares the
    collector's per-object header and its traversals of millions of states."""


class InstallmentState(Frozen, frozen=True, kw_only=True, gc=False):
    number: int
    due_date: date
    principal_minor: int
    interest_minor: int
    fee_minor: int
    late_fee_minor: int = 0
    fell_due: bool = False
    interest_recognised_minor: int = 0
    fee_recognised_minor: int = 0
    paid_principal_minor: int = 0
    paid_interest_minor: int = 0
    paid_fee_minor: int = 0

    def owed(self, component: Component) -> int:
        """What is still owed on a component, recognised or not."""
        if component is Component.FEE:
            return self.fee_minor + self.late_fee_minor - self.paid_fee_minor
        if component is Component.INTEREST:
            return self.interest_minor - self.paid_interest_minor
        return self.principal_minor - self.paid_principal_minor

    @property
    def owed_minor(self) -> int:
        """Everything still owed: `owed` summed over the components, written out (hot path)."""
        scheduled = (
            self.principal_minor + self.interest_minor + self.fee_minor + self.late_fee_minor
        )
        return (
            scheduled - self.paid_principal_minor - self.paid_interest_minor - self.paid_fee_minor
        )


class AttemptStatus(StrEnum):
    DEDUCTING = "deducting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REVERSED = "reversed"


class Allocated(Frozen, frozen=True, kw_only=True, gc=False):
    """Money a success applied to one component of one installment (`schemas.events.Allocation`
    on the wire)."""

    installment: int
    component: Component
    amount_minor: int


class Attempt(Frozen, frozen=True, kw_only=True, gc=False):
    attempt_id: str
    order_id: str
    channel: str
    amount_minor: int
    installments: tuple[int, ...]
    source: Source
    requested_by: str
    started_at: datetime
    business_date: date | None = None
    status: AttemptStatus = AttemptStatus.DEDUCTING
    submissions: int = 1
    stuck_flagged: bool = False
    success_event_id: str | None = None
    channel_reference: str | None = None
    collected_minor: int = 0
    allocations: tuple[Allocated, ...] = ()
    excess_minor: int = 0
    duplicate_debits: tuple[str, ...] = ()


class RefundStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Refund(Frozen, frozen=True, kw_only=True, gc=False):
    refund_id: str
    channel: str
    order_id: str
    amount_minor: int
    status: RefundStatus = RefundStatus.PENDING


class ProcessedCommand(Frozen, frozen=True, kw_only=True, gc=False):
    """What a command's repeat is answered with."""

    payload_hash: str
    event_ids: tuple[str, ...] = ()
    refused: RejectionReason | None = None  # the refusal a repeat gets again
    opening: bool = False  # the OpenLoan: kept for the loan's life
    attempt_id: str | None = None  # a command about this attempt: kept while it is in flight


class LoanTerms(Frozen, frozen=True, kw_only=True, gc=False):
    borrower_id: str
    currency: str
    principal_minor: int
    debit_account_ref: str


class LoanState(Frozen, frozen=True, kw_only=True, gc=False):
    loan_id: str
    next_seq: int = 1
    last_event_id: str | None = None
    terms: LoanTerms | None = None
    business_date: date | None = None
    installments: tuple[InstallmentState, ...] = ()
    attempts: tuple[Attempt, ...] = ()
    refunds: tuple[Refund, ...] = ()
    # Command id -> record, oldest first; bounded (IDEMPOTENCY_WINDOW, `evolve._remember`).
    processed: dict[str, ProcessedCommand] = field(default_factory=dict)

    @property
    def opened(self) -> bool:
        return self.terms is not None

    @property
    def paid_off(self) -> bool:
        return self.opened and all(row.owed_minor == 0 for row in self.installments)

    @property
    def at_rest(self) -> bool:
        """Paid off, with no attempt in flight and no refund pending: only a late finding (a
        reversal, a duplicate debit) can still change it."""
        pending = any(refund.status is RefundStatus.PENDING for refund in self.refunds)
        return self.paid_off and self.in_flight is None and not pending

    @property
    def in_flight(self) -> Attempt | None:
        return next((a for a in self.attempts if a.status is AttemptStatus.DEDUCTING), None)

    def installment(self, number: int) -> InstallmentState | None:
        if 1 <= number <= len(self.installments):
            return self.installments[number - 1]
        return None

    def attempt(self, attempt_id: str) -> Attempt | None:
        return next((a for a in self.attempts if a.attempt_id == attempt_id), None)

    def refund(self, refund_id: str) -> Refund | None:
        return next((r for r in self.refunds if r.refund_id == refund_id), None)


def initial_state(loan_id: str) -> LoanState:
    """The state of a loan before its first event."""
    return LoanState(loan_id=loan_id)
