"""The demo's run: processes up, a month of business days, reconciliation, summary and checks."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ledger.analytics import ChannelRow, format_yuan
from ledger.balances import apply_postings, paid_by_card
from ledger.state import AttemptStatus, LoanState, RefundStatus
from schemas.commands import CloseBusinessDayForPartition, CommandBase
from schemas.events import DeductionStarted, Event
from schemas.outcomes import Outcome
from streams.client import LedgerClient
from streams.dev.channels import simulator_command
from streams.dev.channels.admin import SimulatorClient
from streams.dev.channels.simulator import GroundTruth
from streams.dev.demo.scenario import (
    START,
    Book,
    Processes,
    demo_channels,
    make_book,
    one_day,
    opening,
)
from streams.dev.demo.scenario import wait_for_channels as wait_for_channels_at
from streams.dev.localkafka import free_port
from streams.logread import partition_count
from streams.reconcile.run import LogStates, run_reconcile
from streams.settings import LedgerSettings

CHANNELS = ("alpha", "beta")
SETTLE_S = 180.0


@dataclass
class DemoRun:
    settings: LedgerSettings
    processes: Processes
    rng: random.Random
    console: Console
    log: LogStates = field(default_factory=LogStates)
    outcomes: Counter[str] = field(default_factory=Counter)
    findings: Counter[str] = field(default_factory=Counter)
    balances: dict[str, int] = field(default_factory=dict)
    card_paid: Counter[str] = field(default_factory=Counter)
    seen: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.log.observer = self._observe

    def _observe(self, event: Event) -> None:
        self.seen[_mode(event)] += 1
        apply_postings(self.balances, event.postings)
        self.card_paid[event.loan_id] += paid_by_card(event.loan_id, event.postings)

    def play(self, loans: int, days: int, seed: int, report_dir: Path) -> bool:
        book = make_book(self.rng, loans)
        self._start_processes(book, seed)
        with LedgerClient(self.settings) as client:
            self._send(client, opening(book, self.rng, _now()), "open", timeout_s=180)
            for offset in range(days):
                self._business_day(client, book, START + timedelta(days=offset))
                if offset >= 2:
                    self._reconcile(START + timedelta(days=offset - 2))
        last = START + timedelta(days=days - 1)
        self._settle()
        for day in (last - timedelta(days=1), last, last + timedelta(days=1)):
            self._reconcile(day)
        self._settle()
        return self._conclude(book, report_dir)

    # ---- phases ------------------------------------------------------------------------------

    def _start_processes(self, book: Book, seed: int) -> None:
        port = free_port()
        self.settings = self.settings.model_copy(
            update={"channels_url": f"http://127.0.0.1:{port}"}
        )
        config = self.processes.logs / "channels.json"
        self.processes.logs.mkdir(parents=True, exist_ok=True)
        config.write_text(demo_channels(seed, book.broke).model_dump_json(indent=2))
        environment = {
            "LEDGER_BOOTSTRAP_SERVERS": self.settings.bootstrap_servers,
            "LEDGER_TOPIC_PREFIX": self.settings.topic_prefix,
            "LEDGER_CHANNELS_URL": self.settings.channels_url,
            "LEDGER_LOG_LEVEL": "warn",
        }
        self.processes.start("channels", simulator_command(port, config), {})
        wait_for_channels_at(self.settings.channels_url)
        self.processes.start("worker", ["worker"], environment)
        self.processes.start("gateway", ["gateway"], environment)
        self.console.print(f"processes up; logs in {self.processes.logs}")

    def _business_day(self, client: LedgerClient, book: Book, day: date) -> None:
        states = self.log.catch_up(self.settings).states
        partitions = partition_count(self.settings, "ledger.commands")
        commands = one_day(book, self.rng, day, _now(), states, partitions)
        statuses = self._send(client, commands, day.isoformat())
        refused = sum(n for status, n in statuses.items() if status != "accepted")
        self.console.print(
            f"{day}: day closed ({partitions} ticks), "
            f"{len(commands) - partitions} repayment requests, {refused} refused"
        )
        self.processes.check_alive()
        time.sleep(0.5)  # the gateway works while the next day waits a moment

    def _send(
        self,
        client: LedgerClient,
        commands: Sequence[CommandBase | CloseBusinessDayForPartition],
        label: str,
        timeout_s: float = 60,
    ) -> Counter[str]:
        client.send_many(commands)
        statuses: Counter[str] = Counter()
        for command in commands:
            outcome: Outcome = client.wait_for(command.command_id, timeout_s)
            key = outcome.status.value + (f":{outcome.reason.value}" if outcome.reason else "")
            statuses[key] += 1
        self.outcomes.update(statuses)
        return statuses

    def _reconcile(self, day: date) -> None:
        states = self.log.catch_up(self.settings).states
        for channel in CHANNELS:
            report = run_reconcile(self.settings, channel, day, states=states)
            for finding in report.findings:
                self.findings[f"{finding['type']} {finding['status']}"] += 1

    def _settle(self) -> None:
        """Until no attempt is in flight and no refund pending (the gateway polls them out)."""
        deadline = time.monotonic() + SETTLE_S
        while True:
            open_work = _open_work(self.log.catch_up(self.settings).states.values())
            if open_work == 0:
                return
            if time.monotonic() > deadline:
                self.console.print(f"[red]{open_work} attempts or refunds still open[/]")
                return
            self.processes.check_alive()
            time.sleep(1)

    def _conclude(self, book: Book, report_dir: Path) -> bool:
        from ledger.analytics import build_report
        from streams.report.page import read_events, write_report

        self.log.catch_up(self.settings)
        truth = asyncio.run(_ground_truth(self.settings.channels_url))
        summary = build_report(read_events(self.settings))
        self.console.print(_channel_table(summary.channels))
        self.console.print(f"outcomes: {dict(sorted(self.outcomes.items()))}")
        self.console.print(f"reconciliation findings: {dict(sorted(self.findings.items()))}")
        modes = {name: self.seen[mode] for mode, name in FAILURE_MODES.items()}
        self.console.print(f"failure modes met: {modes}")
        differing = _cards_agree(book, self.card_paid, truth)
        checks = {
            "sum of all balances is 0": sum(self.balances.values()) == 0,
            "`ledger replay --verify`: the log replays to ledger.balances": self._replay_verifies(),
            f"ground truth equals ledger, card by card (differ: {differing})": not differing,
        }
        for name, ok in checks.items():
            mark = "[green]PASS[/]" if ok else "[red]FAIL[/]"
            self.console.print(f"{mark} {name}")
        page = write_report(self.settings, report_dir, "Demo: a month of repayments", _now())
        self.console.print(f"report: {page.resolve()}")
        return all(checks.values())

    def _replay_verifies(self, attempts: int = 15) -> bool:
        """As an operator would check it; the projector may still be a moment behind."""
        command = [sys.executable, "-m", "streams.cli.main", "--bootstrap-servers",
                   self.settings.bootstrap_servers, "--topic-prefix", self.settings.topic_prefix,
                   "replay", "--verify", "--no-progress"]  # fmt: skip
        for _ in range(attempts):
            done = subprocess.run(command, capture_output=True, text=True, timeout=300)
            if done.returncode == 0:
                return True
            time.sleep(2)
        self.console.print(done.stdout[-2000:] + done.stderr[-2000:])
        return False


# ---- helpers -----------------------------------------------------------------------------------

# What each failure mode of the article leaves in the log.
FAILURE_MODES = {
    "DeductionOutcomeUnknown": "timeouts",
    "DeductionResubmissionRequested": "lost requests resubmitted",
    "DeductionProcessing": "asynchronous answers",
    "backup": "moves to the backup channel",
    "DeductionReversed": "reversals",
    "DuplicateDebitRecorded": "duplicate debits",
    "RefundSucceeded": "refunds",
    "DeductionFailed": "definite failures",
}


def _mode(event: Event) -> str:
    if isinstance(event, DeductionStarted) and event.previous_attempt_id is not None:
        return "backup"
    return event.type


def _now() -> datetime:
    return datetime.now(UTC)


async def _ground_truth(url: str) -> GroundTruth:
    async with SimulatorClient(url, timeout_s=10) as client:
        return await client.ground_truth()


def _open_work(states: Iterable[LoanState]) -> int:
    """Attempts in flight and refunds pending: the gateway still has work."""
    return sum(
        sum(1 for a in state.attempts if a.status is AttemptStatus.DEDUCTING)
        + sum(1 for r in state.refunds if r.status is RefundStatus.PENDING)
        for state in states
    )


def _cards_agree(book: Book, card_paid: Counter[str], truth: GroundTruth) -> list[str]:
    """The loans whose card the channels charged (net) other than the ledger says it paid."""
    differing = []
    for loan in book.loans:
        card = truth.accounts.get(Book.card(loan))
        net = 0 if card is None else card.charged_minor - card.reversed_minor - card.refunded_minor
        if net != card_paid[loan]:
            differing.append(loan)
    return differing


def _channel_table(rows: tuple[ChannelRow, ...]) -> Table:
    table = Table(title="Per channel")
    headings = ("channel", "attempts", "ok", "failed", "resolved", "collected", "reversed",
                "refunded", "open")  # fmt: skip
    for heading in headings:
        table.add_column(heading, justify="right")
    for row in rows:
        table.add_row(
            row.channel,
            str(row.attempts),
            str(row.succeeded),
            str(row.failed),
            str(row.unknowns_resolved),
            format_yuan(row.collected_minor),
            format_yuan(row.reversed_minor),
            format_yuan(row.refunded_minor),
            str(row.in_flight),
        )
    return table
