"""Stateful property test of the pure core: random loans driven through every door and answer.

A RuleBasedStateMachine sends commands to one to three loans: business days, repayment requests
from the three doors, channel answers for any attempt ever started (late, repeated, out of order),
statement findings, refund answers, and exact and altered re-sends. After every step the
invariants of docs/design.md hold, and a simple model of the attempt state machine
(attempt id -> status) predicts every outcome and agrees with the ledger's state.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ledger import DEFAULT_POLICY, Decision, LoanState, accounts, decide, initial_state
from ledger.balances import fold_balances
from ledger.state import AttemptStatus, RefundStatus
from schemas.commands import (
    CloseBusinessDay,
    Command,
    DiscrepancyKind,
    FlagStuckAttempt,
    OpenLoan,
    RepaymentMethod,
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
    Source,
    parse_command,
)
from schemas.events import (
    AutoDebitDue,
    DeductionStarted,
    DeductionSucceeded,
    DuplicateDebitRecorded,
    Event,
    LateFeeAssessed,
    Posting,
    RefundStarted,
    ReportedAmountAboveAttempt,
    encode_event,
)
from schemas.outcomes import Outcome, OutcomeStatus, RejectionReason
from tests.support.builders import (
    FIRST_DUE,
    LOAN,
    T0,
    beyond_the_refusal,
    close_day,
    failure,
    fold,
    given,
    open_loan,
    request,
    started,
    success,
    when,
)

Expected = tuple[OutcomeStatus, RejectionReason | None]
Pick = TypeVar("Pick")
ACCEPTED: Expected = (OutcomeStatus.ACCEPTED, None)
DUPLICATE: Expected = (OutcomeStatus.DUPLICATE, None)
START = T0.date()
CHANNELS = DEFAULT_POLICY.channels
FIRST_CHANNEL = CHANNELS[0]
DETAILS: tuple[Literal["timeout", "error"], ...] = ("timeout", "error")
INFORMATIVE_ANSWERS = ("submission", "processing", "not_found", "unknown", "stuck")
# The statuses a statement finding usually finds its attempt in (it may find it in any).
FINDING_TARGETS = {
    "reversal": (AttemptStatus.SUCCEEDED,),
    "duplicate_debit": (AttemptStatus.SUCCEEDED, AttemptStatus.REVERSED),
    "unrecorded_success": (AttemptStatus.DEDUCTING, AttemptStatus.FAILED),
    "discrepancy": tuple(AttemptStatus),
}


def refused(reason: RejectionReason) -> Expected:
    return OutcomeStatus.REJECTED, reason


# ---- the money check: what the channels collected == what reached the loan's accounts -------


def _clearing_channel(account: str) -> str | None:
    parts = account.split(":")
    is_clearing = len(parts) == 3 and parts[0] == "channel" and parts[2] == "clearing"
    return parts[1] if is_clearing else None


def clearing_flows(loan_id: str, events: Sequence[Event]) -> dict[str, int]:
    """Per channel: debits minus credits of `channel:{c}:clearing` in the loan's postings, i.e.
    the money moved from the channel into the loan's receivables and overpayment, net.

    Asserts that the other side of every such posting is one of the loan's own four accounts and
    that the loan's accounts move by exactly the opposite amount."""
    own = {*accounts.receivables(loan_id), accounts.overpayment(loan_id)}
    flows: Counter[str] = Counter()
    loan_side = 0  # debits minus credits on the loan's accounts, from those postings only
    for posting in (p for event in events for p in event.postings):
        into = _clearing_channel(posting.debit)
        back = _clearing_channel(posting.credit)
        if into is not None:
            assert posting.credit in own, posting
            flows[into] += posting.amount_minor
            loan_side -= posting.amount_minor
        if back is not None:
            assert posting.debit in own, posting
            flows[back] -= posting.amount_minor
            loan_side += posting.amount_minor
    assert loan_side == -sum(flows.values()), (loan_side, flows)
    return {channel: net for channel, net in flows.items() if net != 0}


# ---- the simple model -------------------------------------------------------------------------


@dataclass
class ModelAttempt:
    """One attempt as docs/design.md draws it."""

    order_id: str
    channel: str
    amount_minor: int
    installments: tuple[int, ...]
    status: AttemptStatus = AttemptStatus.DEDUCTING
    collected_minor: int = 0
    # Channel references of the debits on our books: the success's, then each duplicate's.
    references: list[str] = field(default_factory=list)


@dataclass
class ModelRefund:
    channel: str
    amount_minor: int
    status: RefundStatus = RefundStatus.PENDING


@dataclass
class LoanRun:
    """One loan: the live state, its full log, and what the model expects of it."""

    loan_id: str
    currency: str
    term: int
    state: LoanState
    events: list[Event] = field(default_factory=list)
    business_date: date | None = None
    first_due: date | None = None  # from its OpenLoan: how far its first close may reach
    accepted: dict[str, tuple[Command, tuple[str, ...]]] = field(default_factory=dict)
    refused: dict[str, tuple[Command, RejectionReason]] = field(default_factory=dict)
    outcomes: list[tuple[str, Outcome]] = field(default_factory=list)
    auto_debits: list[AutoDebitDue] = field(default_factory=list)
    attempts: dict[str, ModelAttempt] = field(default_factory=dict)
    refunds: dict[str, ModelRefund] = field(default_factory=dict)
    # Per channel: money the channels said they collected (successes, duplicate debits), minus
    # what they gave back (reversals, successful refunds). Kept from commands, not from events.
    collected: Counter[str] = field(default_factory=Counter)

    def order(self, order_id: str) -> ModelAttempt | None:
        return next((a for a in self.attempts.values() if a.order_id == order_id), None)

    def owed_on(self, numbers: Sequence[int] | None) -> int:
        """What the request would collect by default: the named rows, else the rows fallen due."""
        rows = self.state.installments
        if numbers is None:
            return sum(row.owed_minor for row in rows if row.fell_due)
        chosen = [rows[n - 1] for n in set(numbers)]
        return sum(row.owed_minor for row in chosen)


@dataclass(frozen=True)
class Step:
    run: LoanRun
    before: LoanState
    command: Command
    decision: Decision


def payload(command: Command) -> dict[str, Any]:
    return command.model_dump(mode="json", exclude={"issued_at"})


def altered(command: Command, tag: str) -> Command:
    """The same command id with another payload."""
    data = json.loads(command.model_dump_json())
    for key in ("requested_by", "channel_reference", "code", "borrower_id"):
        if key in data:
            data[key] = f"altered-{tag}"
            return parse_command(json.dumps(data))
    for key in ("business_date", "statement_date"):
        if key in data:
            data[key] = (date.fromisoformat(data[key]) + timedelta(days=1)).isoformat()
            return parse_command(json.dumps(data))
    if "detail" in data:
        data["detail"] = "error" if data["detail"] == "timeout" else "timeout"
    else:
        data["type"] = (
            "ReportSubmission" if data["type"] == "FlagStuckAttempt" else "FlagStuckAttempt"
        )
    return parse_command(json.dumps(data))


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.runs: list[LoanRun] = []
        self.sent: list[tuple[LoanRun, Command]] = []
        self.ticks = 0
        self.last: Step | None = None

    # ---- sending, predicting, recording ------------------------------------------------------

    def fresh(self) -> dict[str, Any]:
        self.ticks += 1
        return {"command_id": f"c{self.ticks}", "issued_at": T0 + timedelta(minutes=self.ticks)}

    def send(self, run: LoanRun, command: Command) -> Decision:
        before = run.state
        if self.forgotten(run, command) and not self.known_by_attempt(run, command):
            # Past the idempotency window: decided afresh from the state (the documented answer).
            run.accepted.pop(command.command_id, None)
            run.refused.pop(command.command_id, None)
        decision = decide(before, command)
        outcome = decision.outcome
        assert (outcome.command_id, outcome.loan_id) == (command.command_id, run.loan_id)
        assert (outcome.status, outcome.reason) == self.expect(run, command), (command, outcome)
        if outcome.status is OutcomeStatus.REJECTED:
            assert beyond_the_refusal(decision) == ()
            assert outcome.event_ids == ()
            # An opened loan remembers a first refusal; a repeat is refused from that record.
            repeat = command.command_id in before.processed
            assert bool(decision.events) == (before.opened and not repeat), decision.events
            if decision.events and outcome.reason is not None:
                run.refused[command.command_id] = (command, outcome.reason)
        elif outcome.status is OutcomeStatus.DUPLICATE:
            assert decision.events == ()
            named = () if self.forgotten(run, command) else run.accepted[command.command_id][1]
            assert outcome.event_ids == named
        else:
            assert decision.events
            assert outcome.event_ids == tuple(event.event_id for event in decision.events)
            for event in decision.events:  # time and identity come from the command only
                assert (event.causation_id, event.occurred_at) == (
                    command.command_id,
                    command.issued_at,
                )
            self.record(run, command, decision.events)
            run.accepted[command.command_id] = (command, outcome.event_ids)
        run.state = fold(before, decision.events)
        run.events.extend(decision.events)
        run.outcomes.append((command.command_id, outcome))
        self.sent.append((run, command))
        self.last = Step(run, before, command, decision)
        return decision

    def forgotten(self, run: LoanRun, command: Command) -> bool:
        """A command the loan saw, now past its idempotency window (`IDEMPOTENCY_WINDOW`; the
        window's own rule is tested in test_idempotency_window.py)."""
        seen = command.command_id in run.accepted or command.command_id in run.refused
        return seen and command.command_id not in run.state.processed

    def known_by_attempt(self, run: LoanRun, command: Command) -> bool:
        """An accepted request past the window: its attempt still answers for it."""
        return isinstance(command, RequestRepayment) and command.command_id in run.accepted

    def expect(self, run: LoanRun, command: Command) -> Expected:
        if self.forgotten(run, command) and self.known_by_attempt(run, command):
            return DUPLICATE  # whatever its payload: the window no longer holds its hash
        original = run.accepted.get(command.command_id)
        if original is not None:
            same = payload(original[0]) == payload(command)
            return DUPLICATE if same else refused(RejectionReason.IDEMPOTENCY_CONFLICT)
        first_refused = run.refused.get(command.command_id)
        if first_refused is not None:  # a repeat returns the original outcome, whatever changed
            same = payload(first_refused[0]) == payload(command)
            return refused(first_refused[1] if same else RejectionReason.IDEMPOTENCY_CONFLICT)
        match command:
            case OpenLoan():
                return refused(RejectionReason.LOAN_EXISTS) if run.state.opened else ACCEPTED
            case CloseBusinessDay():
                stale = run.business_date is not None and command.business_date <= run.business_date
                if stale:
                    return refused(RejectionReason.STALE_BUSINESS_DATE)
                # At most a month (the default policy's 31 days) past the last closed day, or
                # past the first due date before any: a forged far-future date is refused.
                horizon = run.business_date or run.first_due
                if horizon is not None and (command.business_date - horizon).days > 31:
                    return refused(RejectionReason.BUSINESS_DATE_TOO_FAR_AHEAD)
                return ACCEPTED
            case RequestRepayment():
                return self.expect_request(run, command)
            case (
                ReportReversal()
                | ReportDuplicateDebit()
                | ReportUnrecordedSuccess()
                | ReportStatementDiscrepancy()
            ):
                return self.expect_finding(run, command)
            case ReportRefundSuccess() | ReportRefundFailure():
                refund = run.refunds.get(command.refund_id)
                if refund is None:
                    return refused(RejectionReason.UNKNOWN_REFUND)
                pending = refund.status is RefundStatus.PENDING
                return ACCEPTED if pending else refused(RejectionReason.REFUND_SETTLED)
            case _:
                attempt = run.attempts.get(command.attempt_id)
                if attempt is None:
                    return refused(RejectionReason.UNKNOWN_ATTEMPT)
                live = {AttemptStatus.DEDUCTING}
                if isinstance(command, ReportChannelSuccess):
                    live.add(AttemptStatus.FAILED)  # a late success still moved money
                return (
                    ACCEPTED if attempt.status in live else refused(RejectionReason.ATTEMPT_SETTLED)
                )

    def expect_request(self, run: LoanRun, command: RequestRepayment) -> Expected:
        if any(number > run.term for number in command.installments or ()):
            return refused(RejectionReason.UNKNOWN_INSTALLMENT)
        if all(row.owed_minor == 0 for row in run.state.installments):
            return refused(RejectionReason.LOAN_CLOSED)
        if any(a.status is AttemptStatus.DEDUCTING for a in run.attempts.values()):
            return refused(RejectionReason.DEDUCTION_IN_PROGRESS)
        owed = run.owed_on(command.installments)
        if owed == 0:
            return refused(RejectionReason.NOTHING_DUE)
        if command.amount_minor is not None and command.amount_minor > owed:
            return refused(RejectionReason.AMOUNT_EXCEEDS_DUE)
        return ACCEPTED

    def expect_finding(
        self,
        run: LoanRun,
        command: ReportReversal
        | ReportDuplicateDebit
        | ReportUnrecordedSuccess
        | ReportStatementDiscrepancy,
    ) -> Expected:
        attempt = run.order(command.order_id)
        if attempt is None or attempt.channel != command.channel:
            return refused(RejectionReason.UNKNOWN_ATTEMPT)
        status = attempt.status
        match command:
            case ReportReversal() if status is not AttemptStatus.SUCCEEDED:
                return refused(RejectionReason.ATTEMPT_NOT_SUCCEEDED)
            case ReportDuplicateDebit() if status not in (
                AttemptStatus.SUCCEEDED,
                AttemptStatus.REVERSED,
            ):
                return refused(RejectionReason.ATTEMPT_NOT_SUCCEEDED)
            case ReportDuplicateDebit() if command.channel_reference in attempt.references:
                return refused(RejectionReason.FINDING_ALREADY_RECORDED)  # never refund twice
            case ReportUnrecordedSuccess() if status not in (
                AttemptStatus.DEDUCTING,
                AttemptStatus.FAILED,
            ):
                return refused(RejectionReason.ATTEMPT_SETTLED)
        return ACCEPTED

    def record(self, run: LoanRun, command: Command, events: Sequence[Event]) -> None:
        """Move the model on for an accepted command (called before the state is folded)."""
        starts = [e for e in events if isinstance(e, DeductionStarted)]
        refunds = [e for e in events if isinstance(e, RefundStarted)]
        expected_starts: list[tuple[str, int, str | None]] = []
        expected_refunds: list[int] = []
        match command:
            case CloseBusinessDay():
                run.business_date = command.business_date
                run.auto_debits += [e for e in events if isinstance(e, AutoDebitDue)]
            case RequestRepayment():
                amount = command.amount_minor or run.owed_on(command.installments)
                expected_starts = [(FIRST_CHANNEL, amount, None)]
            case ReportChannelFailure():
                attempt = run.attempts[command.attempt_id]
                attempt.status = AttemptStatus.FAILED
                backup = DEFAULT_POLICY.backup_after(attempt.channel) if command.retriable else None
                owed = run.owed_on(attempt.installments)  # a late success may have paid it
                if backup is not None and owed > 0:
                    expected_starts = [
                        (backup, min(attempt.amount_minor, owed), command.attempt_id)
                    ]
            case ReportChannelSuccess():
                attempt = run.attempts[command.attempt_id]
                expected_refunds = self.collect(run, attempt, command.amount_minor)
                attempt.references.append(command.channel_reference)
            case ReportUnrecordedSuccess():
                attempt = self.by_order(run, command.order_id)
                expected_refunds = self.collect(run, attempt, command.amount_minor)
                attempt.references.append(command.channel_reference)
            case ReportReversal():
                attempt = self.by_order(run, command.order_id)
                attempt.status = AttemptStatus.REVERSED
                run.collected[attempt.channel] -= attempt.collected_minor
            case ReportDuplicateDebit():
                attempt = self.by_order(run, command.order_id)
                attempt.references.append(command.channel_reference)
                booked = min(command.amount_minor, attempt.amount_minor)  # never above the order
                run.collected[attempt.channel] += booked
                expected_refunds = [booked]
            case ReportRefundSuccess():
                refund = run.refunds[command.refund_id]
                refund.status = RefundStatus.SUCCEEDED
                run.collected[refund.channel] -= refund.amount_minor
            case ReportRefundFailure():
                run.refunds[command.refund_id].status = RefundStatus.FAILED
        got_starts = [(e.channel, e.amount_minor, e.previous_attempt_id) for e in starts]
        assert got_starts == expected_starts, (command, starts)
        assert [e.amount_minor for e in refunds] == expected_refunds, (command, refunds)
        for start in starts:
            assert all(a.status is not AttemptStatus.DEDUCTING for a in run.attempts.values())
            # Never ask a channel for money that is not owed: that would debit the borrower twice.
            assert start.amount_minor <= run.owed_on(start.installments), (command, start)
            assert start.attempt_id not in run.attempts
            run.attempts[start.attempt_id] = ModelAttempt(
                start.order_id, start.channel, start.amount_minor, start.installments
            )
        for new in refunds:
            run.refunds[new.refund_id] = ModelRefund(new.channel, new.amount_minor)

    @staticmethod
    def by_order(run: LoanRun, order_id: str) -> ModelAttempt:
        attempt = run.order(order_id)
        assert attempt is not None, order_id
        return attempt

    @staticmethod
    def collect(run: LoanRun, attempt: ModelAttempt, amount_minor: int) -> list[int]:
        """A success: the attempt is settled; the excess over what was owed must be refunded.
        Only what the attempt asked for is booked: a report naming more is flagged instead."""
        booked = min(amount_minor, attempt.amount_minor)
        excess = booked - run.owed_on(attempt.installments)
        attempt.status = AttemptStatus.SUCCEEDED
        attempt.collected_minor = booked
        run.collected[attempt.channel] += booked
        return [excess] if excess > 0 else []

    # ---- drawing ------------------------------------------------------------------------------

    def attempts(self) -> list[tuple[LoanRun, str]]:
        return [(run, attempt_id) for run in self.runs for attempt_id in run.attempts]

    @staticmethod
    def mostly(preferred: list[Pick], everything: list[Pick]) -> st.SearchStrategy[Pick]:
        """Three times in four one of `preferred` (when there is one), else any of `everything`."""
        if not preferred:
            return st.sampled_from(everything)
        return (
            st.sampled_from(preferred)
            | st.sampled_from(preferred)
            | st.sampled_from(everything)
            | st.sampled_from(preferred)
        )

    def pick_attempt(
        self, data: st.DataObject, statuses: Sequence[AttemptStatus]
    ) -> tuple[LoanRun, str]:
        every = self.attempts()
        preferred = [(run, k) for run, k in every if run.attempts[k].status in statuses]
        return data.draw(self.mostly(preferred, every), label="attempt")

    def refunds(self) -> list[tuple[LoanRun, str]]:
        return [(run, refund_id) for run in self.runs for refund_id in run.refunds]

    def auto_debits(self) -> list[tuple[LoanRun, AutoDebitDue]]:
        return [(run, due) for run in self.runs for due in run.auto_debits]

    # ---- rules --------------------------------------------------------------------------------

    @initialize(data=st.data())
    def open_loans(self, data: st.DataObject) -> None:
        for index in range(data.draw(st.integers(1, 3), label="loans")):
            term = data.draw(st.integers(1, 24), label="term_months")
            command = open_loan(
                loan_id=f"L{index + 1}",
                principal_minor=data.draw(
                    st.integers(1, 2_000) | st.integers(2_000, 10**9), label="principal"
                ),
                currency=data.draw(st.sampled_from(["CNY", "CNY", "USD"]), label="currency"),
                annual_rate_bps=data.draw(st.integers(0, 3600), label="rate_bps"),
                term_months=term,
                repayment_method=data.draw(st.sampled_from(RepaymentMethod), label="method"),
                first_due_date=START + timedelta(days=data.draw(st.integers(0, 45))),
                fee_per_installment_minor=data.draw(st.integers(0, 5_000), label="fee"),
                **self.fresh(),
            )
            run = LoanRun(command.loan_id, command.currency, term, initial_state(command.loan_id))
            run.first_due = command.first_due_date
            self.runs.append(run)
            self.send(run, command)

    @rule(data=st.data(), days=st.integers(1, 40))
    def close_business_day(self, data: st.DataObject, days: int) -> None:
        run = data.draw(st.sampled_from(self.runs))
        today = (run.business_date or START) + timedelta(days=days)
        self.send(run, close_day(today, self.fresh()["command_id"], run.loan_id))

    @rule(data=st.data(), source=st.sampled_from([Source.APP, Source.COLLECTION]))
    def request_repayment(self, data: st.DataObject, source: Source) -> None:
        run = data.draw(st.sampled_from(self.runs))
        numbers = st.lists(st.integers(1, run.term + 1), min_size=1, max_size=4).map(tuple)
        installments = data.draw(st.none() | numbers, label="installments")
        named = [n for n in installments or () if n <= run.term]
        owed = run.owed_on(named if installments else None)
        amounts = st.none() | st.none() | st.integers(1, max(1, owed)) | st.just(owed + 1)
        amount = data.draw(amounts, label="amount_minor")
        fields = {"installments": installments, "amount_minor": amount, **self.fresh()}
        self.send(run, request(source=source, loan_id=run.loan_id, **fields))

    @precondition(lambda self: bool(self.auto_debits()))
    @rule(data=st.data())
    def auto_debit(self, data: st.DataObject) -> None:
        run, due = data.draw(st.sampled_from(self.auto_debits()))
        fields = {**self.fresh(), "command_id": due.request_command_id}
        command = request(
            source=Source.AUTO_DEBIT,
            loan_id=run.loan_id,
            requested_by="scheduler",
            installments=due.installments,
            **fields,
        )
        self.send(run, command)

    @precondition(lambda self: bool(self.attempts()))
    @rule(data=st.data(), kind=st.sampled_from(["success", "failure"]))
    def channel_settles(self, data: st.DataObject, kind: str) -> None:
        """A definite answer: mostly for the attempt in flight, else late, for any attempt."""
        late = (AttemptStatus.FAILED,) if kind == "success" else ()
        run, attempt_id = self.pick_attempt(data, (AttemptStatus.DEDUCTING, *late))
        base = {"loan_id": run.loan_id, "attempt_id": attempt_id, **self.fresh()}
        command: Command
        if kind == "success":
            amount = run.attempts[attempt_id].amount_minor
            paid = data.draw(st.just(amount) | st.integers(1, 2 * amount + 100), label="paid")
            command = ReportChannelSuccess(**base, channel_reference="ref", amount_minor=paid)
        else:
            code = data.draw(st.sampled_from(["insufficient_funds", "card_blocked"]))
            retriable = data.draw(st.booleans(), label="retriable")
            command = ReportChannelFailure(**base, code=code, retriable=retriable)
        self.send(run, command)

    @precondition(lambda self: bool(self.attempts()))
    @rule(data=st.data(), kind=st.sampled_from(INFORMATIVE_ANSWERS))
    def channel_informs(self, data: st.DataObject, kind: str) -> None:
        """An answer that leaves the outcome open (or the sweeper's stuck flag)."""
        run, attempt_id = self.pick_attempt(data, (AttemptStatus.DEDUCTING,))
        base = {"loan_id": run.loan_id, "attempt_id": attempt_id, **self.fresh()}
        command: Command
        match kind:
            case "submission":
                command = ReportSubmission(**base)
            case "processing":
                command = ReportChannelProcessing(**base)
            case "not_found":
                command = ReportOrderNotFound(**base)
            case "unknown":
                detail = data.draw(st.sampled_from(DETAILS))
                command = ReportOutcomeUnknown(**base, detail=detail)
            case _:
                command = FlagStuckAttempt(**base)
        self.send(run, command)

    @precondition(lambda self: bool(self.attempts()))
    @rule(data=st.data(), kind=st.sampled_from(sorted(FINDING_TARGETS)))
    def statement_finding(self, data: st.DataObject, kind: str) -> None:
        run, attempt_id = self.pick_attempt(data, FINDING_TARGETS[kind])
        attempt = run.attempts[attempt_id]
        base = {
            "loan_id": run.loan_id,
            "order_id": attempt.order_id,
            # Mostly the attempt's own channel; a line from another channel is not ours.
            "channel": data.draw(st.sampled_from([attempt.channel] * 3 + list(CHANNELS))),
            "statement_date": run.business_date or START,
            **self.fresh(),
        }
        command: Command
        if kind == "reversal":
            command = ReportReversal(**base)
        elif kind == "duplicate_debit":
            extra = data.draw(st.integers(1, 10**7), label="duplicate amount")
            # Sometimes the success's own reference ("ref", "stmt") or an earlier duplicate's.
            reference = data.draw(st.sampled_from(["dup-1", "dup-2", "ref", "stmt"]))
            command = ReportDuplicateDebit(**base, channel_reference=reference, amount_minor=extra)
        elif kind == "discrepancy":
            found = data.draw(st.sampled_from(DiscrepancyKind))
            command = ReportStatementDiscrepancy(**base, kind=found, detail="seen by the test")
        else:
            amounts = st.just(attempt.amount_minor) | st.integers(1, 2 * attempt.amount_minor)
            paid = data.draw(amounts, label="statement amount")
            command = ReportUnrecordedSuccess(**base, channel_reference="stmt", amount_minor=paid)
        self.send(run, command)

    @precondition(lambda self: bool(self.refunds()))
    @rule(data=st.data(), succeeded=st.booleans())
    def refund_answer(self, data: st.DataObject, succeeded: bool) -> None:
        pending = [(r, k) for r, k in self.refunds() if r.refunds[k].status is RefundStatus.PENDING]
        run, refund_id = data.draw(self.mostly(pending, self.refunds()), label="refund")
        base = {"loan_id": run.loan_id, "refund_id": refund_id, **self.fresh()}
        command: Command = (
            ReportRefundSuccess(**base, channel_reference="refund-ref")
            if succeeded
            else ReportRefundFailure(**base, code="account_closed")
        )
        self.send(run, command)

    @rule(data=st.data(), how=st.sampled_from(["same", "new_timestamp", "altered", "stray"]))
    def resend_or_stray(self, data: st.DataObject, how: str) -> None:
        """A client retry (same id and payload, maybe a fresh issued_at), a reused id with another
        payload, or a stray command: OpenLoan again, an answer about something never started."""
        run, command = data.draw(st.sampled_from(self.sent), label="resent")
        if how == "new_timestamp":
            command = command.model_copy(update={"issued_at": self.fresh()["issued_at"]})
        elif how == "altered":
            command = altered(command, str(self.ticks))
        elif how == "stray":
            command = self.stray(data, run)
        self.send(run, command)

    def stray(self, data: st.DataObject, run: LoanRun) -> Command:
        base = {"loan_id": run.loan_id, **self.fresh()}
        match data.draw(st.sampled_from(["open", "answer", "finding", "refund"]), label="stray"):
            case "open":
                return open_loan(**base)
            case "answer":
                return ReportSubmission(**base, attempt_id="never-started")
            case "finding":
                return ReportReversal(
                    **base, order_id="never-started", channel="alpha", statement_date=START
                )
            case _:
                return ReportRefundFailure(**base, refund_id="never-started", code="x")

    # ---- invariants ---------------------------------------------------------------------------

    def all_postings(self) -> list[Posting]:
        return [p for run in self.runs for event in run.events for p in event.postings]

    @invariant()
    def postings_are_well_formed(self) -> None:
        for run in self.runs:
            for posting in (p for event in run.events for p in event.postings):
                assert posting.amount_minor > 0, posting
                assert posting.debit != posting.credit, posting
                assert posting.currency == run.currency, posting

    @invariant()
    def balances_sum_to_zero(self) -> None:
        postings = self.all_postings()
        assert sum(fold_balances(postings).values()) == 0
        for currency in {p.currency for p in postings}:
            same = [p for p in postings if p.currency == currency]
            assert sum(fold_balances(same).values()) == 0, currency

    @invariant()
    def receivables_never_negative_and_match_the_state(self) -> None:
        balances = fold_balances(self.all_postings())
        for run in self.runs:
            principal, interest, fee = accounts.receivables(run.loan_id)
            for account in (principal, interest, fee):
                assert balances.get(account, 0) >= 0, (account, balances.get(account))
            rows = run.state.installments
            assert balances.get(principal, 0) == sum(
                r.principal_minor - r.paid_principal_minor for r in rows
            )
            assert balances.get(interest, 0) == sum(
                r.interest_recognised_minor - r.paid_interest_minor for r in rows
            )
            assert balances.get(fee, 0) == sum(
                r.fee_recognised_minor + r.late_fee_minor - r.paid_fee_minor for r in rows
            )

    @invariant()
    def nothing_is_booked_or_refunded_beyond_what_an_attempt_asked_for(self) -> None:
        """Issue 15: a report can book at most its attempt's amount (a success, each second
        debit); a refund never exceeds what its order collected; anything named above is
        flagged with a `ReportedAmountAboveAttempt` for exactly the difference."""
        for run in self.runs:
            asked = {
                e.attempt_id: e.amount_minor for e in run.events if e.type == "DeductionStarted"
            }
            collected: Counter[str] = Counter()
            for event in run.events:
                if isinstance(event, DeductionSucceeded | DuplicateDebitRecorded):
                    assert event.amount_minor <= asked[event.attempt_id], event
                    collected[event.attempt_id] += event.amount_minor
                elif isinstance(event, ReportedAmountAboveAttempt):
                    assert event.booked_minor == asked[event.attempt_id] < event.reported_minor
            refunded: Counter[str] = Counter()
            for event in run.events:
                if isinstance(event, RefundStarted):
                    refunded[event.order_id] += event.amount_minor
            for order_id, amount in refunded.items():
                assert amount <= collected[order_id], (order_id, amount, collected)

    @invariant()
    def at_most_one_attempt_deducting(self) -> None:
        for run in self.runs:
            deducting = [a for a in run.state.attempts if a.status is AttemptStatus.DEDUCTING]
            assert len(deducting) <= 1, deducting

    @invariant()
    def collected_money_reaches_the_loan_exactly_once(self) -> None:
        for run in self.runs:
            expected = {channel: net for channel, net in run.collected.items() if net != 0}
            assert clearing_flows(run.loan_id, run.events) == expected, run.loan_id

    @invariant()
    def replay_equals_live_state(self) -> None:
        for run in self.runs:
            assert fold(initial_state(run.loan_id), run.events) == run.state

    @invariant()
    def last_decision_is_deterministic(self) -> None:
        if self.last is None:
            return
        again = decide(self.last.before, self.last.command)
        assert again.outcome == self.last.decision.outcome
        first = [encode_event(event) for event in self.last.decision.events]
        assert [encode_event(event) for event in again.events] == first

    @invariant()
    def seqs_are_contiguous_and_event_ids_unique(self) -> None:
        every_id: list[str] = []
        for run in self.runs:
            assert [e.seq for e in run.events] == list(range(1, len(run.events) + 1))
            assert all(e.loan_id == run.loan_id for e in run.events)
            assert run.state.next_seq == len(run.events) + 1
            every_id += [e.event_id for e in run.events]
        assert len(every_id) == len(set(every_id))

    @invariant()
    def no_late_fee_falls_on_a_debit_still_in_flight(self) -> None:
        """Issue 16, 4: a borrower whose debit the channel is still processing is not charged
        for the channel's delay (the fee waits for the attempt's end)."""
        if self.last is None:
            return
        attempt = self.last.before.in_flight
        paying = set() if attempt is None else set(attempt.installments)
        events = self.last.decision.events
        charged = {e.installment for e in events if isinstance(e, LateFeeAssessed)}
        assert not charged & paying, (charged, paying)

    @invariant()
    def one_outcome_per_command(self) -> None:
        for run in self.runs:
            sent = [command.command_id for owner, command in self.sent if owner is run]
            assert [command_id for command_id, _ in run.outcomes] == sent
            assert all(o.command_id == cid for cid, o in run.outcomes)

    @invariant()
    def model_agrees_with_the_ledger(self) -> None:
        for run in self.runs:
            ledger_attempts = {a.attempt_id: a.status for a in run.state.attempts}
            assert ledger_attempts == {k: a.status for k, a in run.attempts.items()}
            ledger_refunds = {r.refund_id: r.status for r in run.state.refunds}
            assert ledger_refunds == {k: r.status for k, r in run.refunds.items()}


def test_ledger_state_machine() -> None:
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=150,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def test_the_money_check_fails_when_a_posting_is_dropped() -> None:
    state, events = initial_state(LOAN), list[Event]()
    for command in (open_loan(fee_per_installment_minor=500), close_day(FIRST_DUE)):
        decision = when(state, command)
        state, events = fold(state, decision.events), events + list(decision.events)
    attempt = started(decision := when(state, request("r1")))
    state, events = fold(state, decision.events), events + list(decision.events)
    paid = when(state, success("s1", attempt.attempt_id, attempt.amount_minor))
    events += paid.events
    assert clearing_flows(LOAN, events) == {"alpha": attempt.amount_minor}

    [succeeded] = [e for e in events if isinstance(e, DeductionSucceeded)]
    assert len(succeeded.postings) == 3  # fee, interest, principal
    dropped = succeeded.model_copy(update={"postings": succeeded.postings[1:]})
    tampered = [dropped if e is succeeded else e for e in events]
    assert clearing_flows(LOAN, tampered) != {"alpha": attempt.amount_minor}


def test_no_backup_attempt_for_money_a_late_success_already_paid() -> None:
    """Found by the machine: A fails for good, B starts, A's late success pays, B fails
    retriably; the backup on beta asked the borrower's card for the whole amount again."""
    state = given(open_loan(), close_day(FIRST_DUE))
    first = started(decision := when(state, request("r1")))
    state = fold(state, decision.events)
    state = fold(state, when(state, failure("f1", first.attempt_id, "card_blocked", False)).events)
    second = started(decision := when(state, request("r2")))
    state = fold(state, decision.events)
    state = fold(state, when(state, success("s1", first.attempt_id, first.amount_minor)).events)

    decision = when(state, failure("f2", second.attempt_id, "bank_busy", retriable=True))

    assert [event.type for event in decision.events] == ["DeductionFailed"]
