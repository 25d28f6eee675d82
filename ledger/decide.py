"""`decide(state, command) -> Decision`: the ledger's one entry point for every command.

Pure: the same state, command and policy always give the same events, byte for byte. The order
of the checks below is the documented rejection precedence (`schemas.outcomes.RejectionReason`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from ledger import business_day, deduction, identity, opening, reconciliation
from ledger.identity import payload_hash
from ledger.policy import DEFAULT_POLICY, Policy
from ledger.recorder import Recorder
from ledger.state import LoanState, ProcessedCommand
from schemas.commands import (
    CloseBusinessDay,
    Command,
    FlagStuckAttempt,
    OpenLoan,
    ReportChannelFailure,
    ReportChannelProcessing,
    ReportChannelSuccess,
    ReportDuplicateDebit,
    ReportOrderNotFound,
    ReportOutcomeUnknown,
    ReportRefundFailure,
    ReportRefundSuccess,
    ReportReversal,
    ReportStatementDiscrepancy,
    ReportSubmission,
    ReportUnrecordedSuccess,
    RequestRepayment,
)
from schemas.events import CommandRejected, Event
from schemas.outcomes import Outcome, RejectionReason, accepted, duplicate, rejected


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome, the events to append, and the loan's state once they are folded in (the
    shell stores it as is: no reader evolves a decision's events a second time)."""

    outcome: Outcome
    events: tuple[Event, ...]
    state: LoanState


def decide(
    state: LoanState,
    command: Command,
    policy: Policy = DEFAULT_POLICY,
    partition_date: date | None = None,
) -> Decision:
    """`partition_date`: the business day of the loan's partition (`ledger.business_clock`),
    if it has one; a loan's own `CloseBusinessDay` may run ahead of it by `max_days_ahead`."""
    assert command.loan_id == state.loan_id, (
        f"command for {command.loan_id} sent to {state.loan_id}"
    )
    command_hash = payload_hash(command)
    seen = state.processed.get(command.command_id) or _request_beyond_window(state, command)
    if seen is not None:
        if seen.payload_hash != command_hash:
            return _refuse(state, command, RejectionReason.IDEMPOTENCY_CONFLICT)
        if seen.refused is not None:  # a repeat returns the original outcome: that refusal
            return _refuse(state, command, seen.refused)
        outcome = duplicate(command.command_id, command.loan_id, seen.event_ids)
        return Decision(outcome, (), state)
    reason = refusal(state, command, policy, partition_date)
    if reason is not None:
        return _refuse_and_record(state, command, command_hash, reason)
    recorder = Recorder(state, command, command_hash)
    _execute(recorder, command, policy)
    assert recorder.events, f"accepted {command.type} produced no event"
    event_ids = tuple(event.event_id for event in recorder.events)
    return Decision(
        accepted(command.command_id, command.loan_id, event_ids),
        tuple(recorder.events),
        recorder.state,
    )


def _request_beyond_window(state: LoanState, command: Command) -> ProcessedCommand | None:
    """A RequestRepayment older than the idempotency window is still known by the attempt it
    started (its id derives from the command): its repeat is a duplicate, never a second debit;
    its payload is no longer compared, and the answer names no event. Every other command is
    kept from acting twice by the state itself (docs/design.md, "Idempotency")."""
    if not isinstance(command, RequestRepayment):
        return None
    if state.attempt(identity.attempt_id(command.loan_id, command.command_id, 0)) is None:
        return None
    return ProcessedCommand(payload_hash=payload_hash(command))


def refusal(
    state: LoanState, command: Command, policy: Policy, partition_date: date | None = None
) -> RejectionReason | None:
    """Why `command` cannot be accepted in `state`, or None. Idempotency is checked before."""
    if isinstance(command, OpenLoan):
        return opening.refusal(state, command, policy)
    if not state.opened:
        return RejectionReason.UNKNOWN_LOAN
    match command:
        case RequestRepayment():
            return deduction.request_refusal(state, command)
        case CloseBusinessDay():
            return business_day.refusal(state, command, policy, partition_date)
        case (
            ReportReversal()
            | ReportDuplicateDebit()
            | ReportUnrecordedSuccess()
            | ReportStatementDiscrepancy()
        ):
            return reconciliation.finding_refusal(state, command)
        case ReportRefundSuccess() | ReportRefundFailure():
            return reconciliation.refund_refusal(state, command)
        case _:
            return deduction.answer_refusal(state, command)


def _execute(recorder: Recorder, command: Command, policy: Policy) -> None:
    match command:
        case OpenLoan():
            opening.open_loan(recorder, command)
        case RequestRepayment():
            deduction.start_deduction(recorder, command, policy)
        case CloseBusinessDay():
            business_day.close_business_day(recorder, command, policy)
        case (
            ReportSubmission()
            | ReportChannelSuccess()
            | ReportChannelFailure()
            | ReportChannelProcessing()
            | ReportOrderNotFound()
            | ReportOutcomeUnknown()
            | FlagStuckAttempt()
        ):
            deduction.record_answer(recorder, command, policy)
        case (
            ReportReversal()
            | ReportDuplicateDebit()
            | ReportUnrecordedSuccess()
            | ReportStatementDiscrepancy()
        ):
            reconciliation.record_finding(recorder, command)
        case ReportRefundSuccess() | ReportRefundFailure():
            reconciliation.record_refund_answer(recorder, command)


def _refuse_and_record(
    state: LoanState, command: Command, command_hash: str, reason: RejectionReason
) -> Decision:
    """A refusal the loan remembers (a `CommandRejected` event), so that a repeat of the
    command gets it again even once the loan would accept it. A loan that does not exist has
    no log to remember it in."""
    if not state.opened:
        return _refuse(state, command, reason)
    recorder = Recorder(state, command, command_hash)
    recorder.emit(CommandRejected(**recorder.envelope(), command_type=command.type, reason=reason))
    outcome = rejected(command.command_id, command.loan_id, reason)
    return Decision(outcome, tuple(recorder.events), recorder.state)


def _refuse(state: LoanState, command: Command, reason: RejectionReason) -> Decision:
    return Decision(rejected(command.command_id, command.loan_id, reason), (), state)
