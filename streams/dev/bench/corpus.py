"""The benchmark's workload: real commands, decided locally by the pure core into real events.

Loans go through a repayment cycle: open, close the first due day, a request from the app, a
collection request that is refused (`deduction_in_progress`), the channel's success. Deciding
them here (`ledger.decide`) gives the exact events the decider will write, with their ids, so
a benchmark knows what to wait for. Deciding costs a few hundred microseconds a command, so
large byte corpora (raw Kafka baselines, replay) are copies of a decided base with the loan id
substituted: same sizes, same shapes, distinct loans and event ids.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from confluent_kafka import murmur2

from ledger import LoanState, decide, evolve, initial_state
from schemas.commands import (
    CloseBusinessDay,
    Command,
    OpenLoan,
    RepaymentMethod,
    ReportChannelSuccess,
    RequestRepayment,
    Source,
)
from schemas.events import encode_event

ISSUED_AT = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
FIRST_DUE = date(2026, 2, 1)
# Loan ids have one width, so a copy of a base record keeps its exact size.
LOAN_ID = "{tag}-{copy:05d}-{number:06d}"
Loans = int | Sequence[int]  # a count (numbers 0..n-1), or the loan numbers


def loan_id(tag: str, copy: int, number: int) -> str:
    return LOAN_ID.format(tag=tag, copy=copy, number=number)


@dataclass(frozen=True, slots=True)
class Decided:
    """One command as the decider will see it, and what it will write."""

    command: Command
    events: tuple[bytes, ...]  # encoded exactly as the decider encodes them
    event_ids: tuple[str, ...]
    posting_event_ids: tuple[str, ...]  # those that move a balance


@dataclass
class LoanScript:
    """One loan's commands, each decided at once so the next can name the attempt in flight."""

    loan_id: str
    rng: random.Random
    state: LoanState = field(init=False)

    def __post_init__(self) -> None:
        self.state = initial_state(self.loan_id)

    def keep(self, command: Command) -> Decided:
        decision = decide(self.state, command)
        for event in decision.events:
            self.state = evolve(self.state, event)
        return Decided(
            command,
            tuple(encode_event(event) for event in decision.events),
            tuple(event.event_id for event in decision.events),
            tuple(event.event_id for event in decision.events if event.postings),
        )

    def open(self) -> Decided:
        return self.keep(
            OpenLoan(
                command_id=f"open-{self.loan_id}",
                loan_id=self.loan_id,
                issued_at=ISSUED_AT,
                borrower_id=f"B-{self.loan_id}",
                principal_minor=self.rng.randrange(100_000, 5_000_000),
                currency="CNY",
                annual_rate_bps=self.rng.choice((900, 1200, 1800, 2400)),
                term_months=self.rng.choice((3, 6, 12)),
                repayment_method=RepaymentMethod.EQUAL_INSTALLMENT,
                first_due_date=FIRST_DUE,
            )
        )

    def close_first_day(self) -> Decided:
        return self.keep(
            CloseBusinessDay(
                command_id=f"close-{self.loan_id}-1",
                loan_id=self.loan_id,
                issued_at=datetime.combine(FIRST_DUE, datetime.min.time(), tzinfo=UTC)
                + timedelta(hours=23),
                business_date=FIRST_DUE,
            )
        )

    def request(self, source: Source) -> Decided:
        return self.keep(
            RequestRepayment(
                command_id=f"req-{source.value}-{self.loan_id}",
                loan_id=self.loan_id,
                issued_at=ISSUED_AT + timedelta(days=31, hours=1),
                source=source,
                requested_by=f"{source.value}-user",
            )
        )

    def succeed_in_flight(self) -> Decided:
        attempt = self.state.in_flight
        assert attempt is not None, f"{self.loan_id}: no attempt in flight"
        return self.keep(
            ReportChannelSuccess(
                command_id=f"ok-{self.loan_id}",
                loan_id=self.loan_id,
                issued_at=ISSUED_AT + timedelta(days=31, hours=2),
                attempt_id=attempt.attempt_id,
                channel_reference=f"ch-{attempt.attempt_id[:12]}",
                amount_minor=attempt.amount_minor,
            )
        )


@dataclass(frozen=True)
class Workload:
    """What a benchmark sends, and how many events the cycles make in all."""

    sent: list[Decided]
    events: int
    loans: int


def repayment_cycles(loans: Loans, tag: str = "bench", seed: int = 99) -> Workload:
    """Five commands a loan, phase by phase across loans so every partition is busy at once.
    The channel's success is sent as a command: the decider and projector alone."""
    scripts = _scripts(loans, tag, seed)
    phases = [
        [s.open() for s in scripts],
        [s.close_first_day() for s in scripts],
        [s.request(Source.APP) for s in scripts],
        [s.request(Source.COLLECTION) for s in scripts],
        [s.succeed_in_flight() for s in scripts],
    ]
    sent = [decided for phase in phases for decided in phase]
    return Workload(sent, sum(len(d.events) for d in sent), len(scripts))


def gateway_cycles(loans: Loans, tag: str = "gw", seed: int = 99) -> Workload:
    """Two commands a loan (open, close the first due day); the gateway does the rest: the
    auto-debit request the closed day asks for, the channel call, the success report. Those
    are decided here too (under other ids: only their count is used)."""
    scripts = _scripts(loans, tag, seed)
    sent = [s.open() for s in scripts] + [s.close_first_day() for s in scripts]
    by_gateway = [d for s in scripts for d in (s.request(Source.AUTO_DEBIT), s.succeed_in_flight())]
    return Workload(sent, sum(len(d.events) for d in [*sent, *by_gateway]), len(scripts))


def _scripts(loans: Loans, tag: str, seed: int) -> list[LoanScript]:
    rng = random.Random(seed)
    numbers = range(loans) if isinstance(loans, int) else loans
    return [LoanScript(loan_id(tag, 0, n), rng) for n in numbers]


def covering(partitions: int, tag: str) -> list[int]:
    """Loan numbers whose ids land one on each partition (murmur2, as every producer)."""
    chosen: dict[int, int] = {}
    number = 0
    while len(chosen) < partitions:
        chosen.setdefault(murmur2(loan_id(tag, 0, number).encode(), partitions), number)
        number += 1
    return sorted(chosen.values())


# ---- byte corpora: copies of a decided base ----------------------------------------------------

Keyed = tuple[bytes, bytes]  # key (the loan id), value


@dataclass(frozen=True)
class Templates:
    """Decided records with the loan id (and each event id's tail) cut out, ready to copy."""

    commands: tuple[tuple[int, bytes], ...]  # (base loan number, value with holes)
    events: tuple[tuple[int, bytes], ...]
    tag: str

    def copies(self, kind: str, count: int) -> Iterator[Keyed]:
        """`count` records (commands or events) from copies 1, 2, ... of the base, in order."""
        base = self.commands if kind == "commands" else self.events
        made, copy = 0, 1
        while made < count:
            for number, template in base:
                if made == count:
                    return
                key = loan_id(self.tag, copy, number).encode()
                yield key, template.replace(LOAN_HOLE, key).replace(COPY_HOLE, b"%08x" % copy)
                made += 1
            copy += 1

    @property
    def events_per_command(self) -> float:
        return len(self.events) / len(self.commands)


LOAN_HOLE = b"\x00L"
COPY_HOLE = b"\x00C"
EVENT_ID_TAIL = 8  # hex digits of an event id replaced by the copy number


def templates(base_loans: int, tag: str = "copy") -> Templates:
    commands, events = [], []
    for decided in repayment_cycles(base_loans, tag=tag, seed=7).sent:
        number = int(decided.command.loan_id.rsplit("-", 1)[1])
        hole = decided.command.loan_id.encode()
        commands.append(
            (number, decided.command.model_dump_json().encode().replace(hole, LOAN_HOLE))
        )
        for value, event_id in zip(decided.events, decided.event_ids, strict=True):
            head = event_id[:-EVENT_ID_TAIL].encode()
            cut = value.replace(event_id.encode(), head + COPY_HOLE)
            events.append((number, cut.replace(hole, LOAN_HOLE)))
    return Templates(tuple(commands), tuple(events), tag)
