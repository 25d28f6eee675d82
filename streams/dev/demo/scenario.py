"""`make demo`: a month of repayments through misbehaving payment channels, end to end.

Starts the local broker (unless KAFKA_BOOTSTRAP_SERVERS names one), the channel simulator, a
worker and the gateway; opens 50 loans; runs 30 business days with all three doors (the
borrower's app, the auto-debit job, collection agents) while the channels time out, lose
requests, answer "processing", fail over to the backup, reverse a success and debit a card twice;
reconciles every statement day; prints a summary per channel and the checks; writes the report;
stops everything it started. Each run writes to its own topic prefix (printed), so it can be
inspected afterwards with `ledger --topic-prefix ... history L007`.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from rich.console import Console

from ledger.state import LoanState
from schemas.commands import (
    CloseBusinessDayForPartition,
    CommandBase,
    OpenLoan,
    RepaymentMethod,
    RequestRepayment,
    Source,
)
from streams.client import business_day_ticks
from streams.dev import LEDGER
from streams.dev.channels.config import ChannelBehaviour, SimulatorConfig
from streams.gateway.channels import ChannelClient

HOME = Path(".local")
START = date(2026, 3, 2)
# Piped (CI, a log file) rich assumes 80 columns, too narrow for the per-channel table.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)


def demo_channels(seed: int, broke: frozenset[str]) -> SimulatorConfig:
    """alpha misbehaves in every way the article lists; beta, the backup, is slow but sure."""
    alpha = ChannelBehaviour(
        latency_ms=20,
        timeout_ms=400,
        processing_ms=800,
        definite_failure=0.08,
        processing=0.10,
        timeout_then_debit=0.07,
        timeout_no_effect=0.04,
        lost_in_transit=0.06,
        cross_midnight=0.08,
        reversed_later=0.04,
        double_debit=0.04,
        insufficient_funds_accounts=broke,
    )
    beta = ChannelBehaviour(latency_ms=10, processing=0.3, processing_ms=600, definite_failure=0.02)
    return SimulatorConfig(seed=seed, channels={"alpha": alpha, "beta": beta})


# ---- the processes ---------------------------------------------------------------------------


@dataclass
class Processes:
    """Child processes with their logs in one folder; all stopped on exit, whatever happens."""

    logs: Path
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, arguments: list[str], environment: dict[str, str]) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("wb") as log:
            self.children[name] = subprocess.Popen(
                arguments if arguments[0] == sys.executable else [*LEDGER, *arguments],
                env=os.environ | environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def check_alive(self) -> None:
        for name, child in self.children.items():
            if child.poll() is not None:
                raise SystemExit(f"{name} exited ({child.returncode}); see {self.logs}/{name}.log")

    def stop(self) -> None:
        for child in self.children.values():
            if child.poll() is None:
                child.terminate()
        for child in self.children.values():
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()


@contextmanager
def running(logs: Path) -> Iterator[Processes]:
    processes = Processes(logs)
    try:
        yield processes
    finally:
        processes.stop()


# ---- the scenario ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Book:
    """The demo's loans: ids, cards, and which cards have no money."""

    loans: tuple[str, ...]
    first_due: dict[str, date]
    broke: frozenset[str]

    @staticmethod
    def card(loan: str) -> str:
        return f"card-{loan}"


def make_book(rng: random.Random, count: int) -> Book:
    loans = tuple(f"L{n:03d}" for n in range(1, count + 1))
    first_due = {loan: START + timedelta(days=rng.randrange(1, 27)) for loan in loans}
    broke = frozenset(Book.card(loan) for loan in rng.sample(loans, 3))
    return Book(loans, first_due, broke)


def opening(book: Book, rng: random.Random, now: datetime) -> list[CommandBase]:
    return [
        OpenLoan(
            command_id=f"open-{loan}",
            loan_id=loan,
            issued_at=now,
            borrower_id=f"B-{loan}",
            principal_minor=rng.randrange(500_000, 5_000_000, 100),
            currency="CNY",
            annual_rate_bps=rng.choice((900, 1200, 1800, 2400)),
            term_months=rng.choice((3, 6, 12)),
            repayment_method=rng.choice(tuple(RepaymentMethod)),
            first_due_date=book.first_due[loan],
            fee_per_installment_minor=rng.choice((0, 0, 1_000)),
            debit_account_ref=Book.card(loan),
        )
        for loan in book.loans
    ]


def one_day(
    book: Book,
    rng: random.Random,
    day: date,
    now: datetime,
    states: Mapping[str, LoanState],
    partitions: int,
) -> list[CommandBase | CloseBusinessDayForPartition]:
    """The business clock closes the day (a tick per partition of `ledger.commands`); a few
    borrowers and an agent act on their own, going by the books as they stand (`states`, folded
    from the log)."""
    commands: list[CommandBase | CloseBusinessDayForPartition] = [
        *business_day_ticks(day, partitions, now)
    ]
    owing = [loan for loan in book.loans if _next_unpaid(states.get(loan)) is not None]
    for loan in rng.sample(owing, min(3, len(owing))):
        # Mostly a prepayment of the next installment; sometimes "everything due".
        next_unpaid = _next_unpaid(states.get(loan))
        named = (next_unpaid,) if next_unpaid is not None and rng.random() < 0.7 else None
        commands.append(_request(loan, Source.APP, f"app-{day.isoformat()}-{loan}", now, named))
    overdue = [loan for loan in book.loans if _overdue(states.get(loan), day)]
    for loan in rng.sample(overdue, min(2, len(overdue))):
        agent = f"agent-{rng.randrange(1, 5)}"
        command_id = f"collect-{day.isoformat()}-{loan}"
        commands.append(_request(loan, Source.COLLECTION, command_id, now, None, agent))
    return commands


def _next_unpaid(state: LoanState | None) -> int | None:
    if state is None:
        return None
    return next((row.number for row in state.installments if row.owed_minor > 0), None)


def _overdue(state: LoanState | None, day: date) -> bool:
    if state is None:
        return False
    late = day - timedelta(days=3)
    return any(
        row.fell_due and row.owed_minor > 0 and row.due_date < late for row in state.installments
    )


def _request(
    loan: str,
    source: Source,
    command_id: str,
    now: datetime,
    installments: tuple[int, ...] | None,
    requested_by: str = "borrower",
) -> RequestRepayment:
    return RequestRepayment(
        command_id=command_id,
        loan_id=loan,
        issued_at=now,
        source=source,
        requested_by=requested_by,
        installments=installments,
    )


async def _health(url: str) -> bool:
    async with ChannelClient(url, timeout_s=2) as client:
        return await client.health()


def wait_for_channels(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            asyncio.run(_health(url))
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
