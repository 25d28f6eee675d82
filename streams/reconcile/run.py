"""`ledger reconcile`: a channel's statements against our books; every difference sent as a command.

The matching rules are `ledger.statements` (pure). This module reads the event log, fetches the
statements of the day and of the days either side (the one-day tolerance), sends the findings
to the decider and waits for their outcomes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import msgspec
from pydantic import ValidationError

from ledger import LoanState
from ledger.sequence import LoanLog, Verdict
from ledger.snapshot import CLOCK_KEY, decode_clock
from ledger.statements import (
    Reconciliation,
    StatementEntry,
    booked_attempts,
    dates_to_reconcile,
    reconcile,
)
from schemas.channel import Statement
from schemas.events import Event, parse_event
from schemas.topics import EVENTS, LOAN_STATES
from streams.errors import LedgerError
from streams.gateway.channels import ChannelClient, ChannelError
from streams.logread import read_log
from streams.settings import LedgerSettings

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    channel: str
    business_date: date
    matched: int
    unknown_orders: tuple[str, ...]
    findings: list[dict[str, str | None]] = field(default_factory=list)

    def as_json(self) -> str:
        return json.dumps(
            {
                "channel": self.channel,
                "date": self.business_date.isoformat(),
                "matched": self.matched,
                "unknown_orders": list(self.unknown_orders),
                "findings": self.findings,
            },
            indent=2,
        )


def loan_states(settings: LedgerSettings) -> dict[str, LoanState]:
    """Every loan's state, folded from the whole event log with the decider's own `evolve`."""
    return LogStates().catch_up(settings).states


@dataclass
class LogStates:
    """Loan states folded from the event log, caught up incrementally (a long-running reader)."""

    loans: LoanLog = field(default_factory=LoanLog)
    positions: dict[int, int] = field(default_factory=dict)
    events: int = 0
    # Called with every event folded (once each), for readers that keep their own totals.
    observer: Callable[[Event], None] | None = None

    @property
    def states(self) -> dict[str, LoanState]:
        """The states of the loans whose log is whole; a quarantined loan is left out (its
        findings would be computed from a state that lacks events)."""
        quarantined = self.loans.quarantined
        return {k: v for k, v in self.loans.states.items() if k not in quarantined}

    def catch_up(self, settings: LedgerSettings) -> LogStates:
        known = len(self.loans.quarantined)
        for record in read_log(settings, EVENTS.name, dict(self.positions)):
            self.positions[record.partition] = record.offset + 1
            self._apply(record.key, record.value)
        for quarantine in list(self.loans.quarantined.values())[known:]:
            log.error(
                "ALERT loan quarantined, left out of reconciliation: %s", quarantine.describe()
            )
        return self

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        try:
            event = parse_event(value or b"")
        except ValidationError:
            self.loans.unreadable((key or b"").decode(errors="replace"))
            return
        if self.loans.fold(event) is Verdict.NEXT:
            self.events += 1
            if self.observer is not None:
                self.observer(event)


def run_reconcile(
    settings: LedgerSettings,
    channel: str,
    business_date: date,
    wait_s: float = 60.0,
    states: dict[str, LoanState] | None = None,
) -> ReconcileReport:
    statements = asyncio.run(_statements(settings, channel, business_date))
    states = loan_states(settings) if states is None else states
    booked = booked_attempts(states.values(), channel)
    result = reconcile(channel, business_date, statements, booked, datetime.now(UTC))
    report = ReconcileReport(channel, business_date, result.matched, result.unknown_orders)
    statuses = _send_and_wait(settings, result, wait_s)
    for finding in result.findings:
        status, reason = statuses.get(finding.command_id, ("no outcome yet", None))
        report.findings.append(
            {
                "command_id": finding.command_id,
                "type": finding.type,
                "loan_id": finding.loan_id,
                "order_id": finding.order_id,
                "status": status,
                "reason": reason,
            }
        )
    return report


async def _statements(
    settings: LedgerSettings, channel: str, business_date: date
) -> dict[date, list[StatementEntry]]:
    days = [business_date + timedelta(days=offset) for offset in (-1, 0, 1)]
    async with ChannelClient(settings.channels_url, settings.channel_call_timeout_s) as client:
        try:
            fetched = [await client.statement(channel, day) for day in days]
        except ChannelError as error:
            raise LedgerError(f"cannot fetch the statements of {channel}: {error}") from error
    return {statement.business_date: _entries(statement) for statement in fetched}


def _entries(statement: Statement) -> list[StatementEntry]:
    return [
        StatementEntry(
            order_id=line.order_id,
            reversed=line.status == "reversed",
            amount_minor=line.amount_minor,
            channel_reference=line.channel_reference,
            business_date=line.business_date,
        )
        for line in statement.lines
    ]


def _send_and_wait(
    settings: LedgerSettings, result: Reconciliation, wait_s: float
) -> dict[str, tuple[str, str | None]]:
    """Send the findings with the upstream client, which watches the outcomes from before the
    first send, and collect what became of each within `wait_s` in all."""
    if not result.findings:
        return {}
    from streams.client import LedgerClient, OutcomeTimeoutError

    found: dict[str, tuple[str, str | None]] = {}
    deadline = time.monotonic() + wait_s
    with LedgerClient(settings) as client:
        client.send_many(result.findings)
        for finding in result.findings:
            try:
                outcome = client.wait_for(finding.command_id, max(deadline - time.monotonic(), 0))
            except OutcomeTimeoutError:
                continue
            reason = outcome.reason.value if outcome.reason else None
            found[finding.command_id] = (outcome.status.value, reason)
    return found


def summary_lines(report: ReconcileReport) -> Iterable[str]:
    yield f"{report.channel} {report.business_date}: {report.matched} lines matched"
    if report.unknown_orders:
        yield f"  {len(report.unknown_orders)} lines for orders we never placed (not ours)"
    for finding in report.findings:
        reason = f" ({finding['reason']})" if finding["reason"] else ""
        yield f"  {finding['type']} {finding['order_id']}: {finding['status']}{reason}"


# ---- the scheduled run -------------------------------------------------------------------------


def partition_days(settings: LedgerSettings) -> dict[int, date]:
    """Each partition's business day, from the clock records the decider writes on
    `ledger.loan-states` (moved by ticks only); a partition never ticked has none."""
    days: dict[int, date] = {}
    clock_key = CLOCK_KEY.encode()
    for record in read_log(settings, LOAN_STATES.name):
        if record.key != clock_key:
            continue
        try:
            snapshot = decode_clock(record.value or b"")
        except msgspec.DecodeError:
            log.error("ALERT unreadable business clock record on partition %d", record.partition)
            continue
        if snapshot is not None:  # None: an older version (its next checkpoint rewrites it)
            days[record.partition] = snapshot.clock.business_date
    return days


def run_scheduled(settings: LedgerSettings, every_s: float, rounds: int | None = None) -> None:
    """Reconcile every routed channel over the recent days, every `every_s` seconds.

    Each round repeats the last few days on purpose: a finding already sent is a duplicate at
    the decider, and a late statement line is caught on a later round."""
    done = 0
    while rounds is None or done < rounds:
        states = loan_states(settings)
        loan_days = (state.business_date for state in states.values())
        clocks = partition_days(settings).values()
        for business_date in dates_to_reconcile(clocks, loan_days, settings.partitions):
            for channel in settings.channels:
                report = run_reconcile(settings, channel, business_date, states=states)
                for line in summary_lines(report):
                    print(line, flush=True)
        done += 1
        if rounds is None or done < rounds:
            time.sleep(every_s)
