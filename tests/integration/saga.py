"""Harness for the deduction saga: worker, channel simulator and gateway as real processes.

Every check reads what really happened twice: the ledger's log (raw JSON, no ledger code) and the
simulator's ground truth (what each card was actually charged, reversed and refunded).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.request
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypeVar

from schemas.commands import CloseBusinessDayForPartition, Command, Source
from streams.client import business_day_ticks
from streams.dev.channels import simulator_command
from streams.dev.channels.admin import SimulatorClient
from streams.dev.channels.config import ChannelBehaviour, SimulatorConfig
from streams.dev.channels.simulator import AccountTruth, GroundTruth
from streams.dev.localkafka import free_port
from tests.integration.pipeline import LogFold, Pipeline, balances_from_topic, outcomes_by_command
from tests.support.builders import FIRST_DUE, T0, close_day, open_loan, request

T = TypeVar("T")
Event = dict[str, Any]

# Scaled down from 3 min / 3 min / 1 h so that a test sees the sweeper and the alert act.
GATEWAY_SETTINGS = {
    "sweep_interval_s": "1",
    "takeover_age_s": "4",
    "stuck_alert_age_s": "8",
    "poll_initial_s": "0.1",
    "poll_max_s": "1",
    "channel_call_timeout_s": "2",
}
QUIET = ChannelBehaviour()  # every debit succeeds at once
SECOND_DUE = date(2026, 3, 1)


@dataclass
class Saga:
    pipeline: Pipeline
    channels_url: str
    gateway_metrics_port: int

    @classmethod
    def start(
        cls,
        pipeline: Pipeline,
        seed: int = 11,
        gateway: dict[str, str] | None = None,
        workers: tuple[str, ...] = ("w1",),
        worker: dict[str, str] | None = None,
    ) -> Saga:
        port, metrics_port = free_port(), free_port()
        config = SimulatorConfig(seed=seed, channels={"alpha": QUIET, "beta": QUIET})
        config_file = pipeline.workdir / "channels.json"
        config_file.write_text(config.model_dump_json())
        saga = cls(pipeline, f"http://127.0.0.1:{port}", metrics_port)
        pipeline.start_process("channels", tuple(simulator_command(port, config_file)))
        saga.wait_for_channels()
        for name in workers:
            pipeline.start_worker(name, **(worker or {}))
        pipeline.start_process(
            "gateway",
            ("gateway",),
            channels_url=saga.channels_url,
            metrics_port=str(metrics_port),
            **(GATEWAY_SETTINGS | (gateway or {})),
        )
        pipeline.supervise()
        return saga

    # ---- the channels ------------------------------------------------------------------------

    def call(self, action: Callable[[SimulatorClient], Awaitable[T]]) -> T:
        async def run() -> T:
            async with SimulatorClient(self.channels_url, timeout_s=10) as client:
                return await action(client)

        return asyncio.run(run())

    def wait_for_channels(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.call(lambda client: client.health())
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def behave(self, channel: str, **fields: Any) -> None:
        behaviour = ChannelBehaviour(**fields)
        self.call(lambda client: client.set_behaviour(channel, behaviour))

    def truth(self) -> GroundTruth:
        return self.call(lambda client: client.ground_truth())

    def card(self, account_ref: str) -> AccountTruth:
        return self.truth().accounts.get(account_ref, AccountTruth())

    # ---- the ledger --------------------------------------------------------------------------

    def send(self, *commands: Command | CloseBusinessDayForPartition) -> None:
        self.pipeline.send(commands)

    def outcomes(self, *command_ids: str, timeout_s: float = 60) -> dict[str, dict[str, Any]]:
        found = self.pipeline.wait_for_outcomes(set(command_ids), timeout_s=timeout_s)
        return {command_id: json.loads(found[command_id][0]) for command_id in command_ids}

    def events(self, loan_id: str) -> list[Event]:
        records = self.pipeline.read("ledger.events")
        mine = [
            json.loads(value)
            for key, value, _p, _o in records
            if key == loan_id.encode() and value is not None
        ]
        unique = {event["seq"]: event for event in mine}
        return [unique[seq] for seq in sorted(unique)]

    def wait_events(
        self, loan_id: str, done: Callable[[list[Event]], bool], timeout_s: float = 60
    ) -> list[Event]:
        deadline = time.monotonic() + timeout_s
        while True:
            events = self.events(loan_id)
            if done(events):
                return events
            if time.monotonic() > deadline:
                kinds = [event["type"] for event in events]
                raise AssertionError(f"{loan_id}: {kinds}\n{self.pipeline.log_tail()}")
            time.sleep(0.5)

    def gateway_metric(self, name: str) -> float:
        url = f"http://127.0.0.1:{self.gateway_metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode()
        values = [
            float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
        ]
        return sum(values)

    def reconcile(self, channel: str, business_date: date) -> dict[str, Any]:
        """`ledger reconcile --json` as an operator would run it."""
        import subprocess
        import sys

        environment = self.pipeline.environment("reconcile") | {
            "LEDGER_CHANNELS_URL": self.channels_url
        }
        command = [sys.executable, "-m", "streams.cli.main", "reconcile", "--channel", channel]
        command += ["--date", business_date.isoformat(), "--json"]
        done = subprocess.run(command, env=environment, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    # ---- the checks ----------------------------------------------------------------------

    def assert_books(self, timeout_s: float = 60) -> LogFold:
        """The whole log: no seq gap, no conflicting repeat, sum 0, balances topic = the fold."""
        fold = LogFold().fold(self.pipeline.read("ledger.events"))
        assert fold.conflicting_repeats == []
        assert fold.seq_gaps() == []
        expected = dict(fold.balances)
        assert sum(expected.values()) == 0
        assert self.pipeline.wait_for_balances(expected, timeout_s) == expected
        return fold


def collected_from_card(events: list[Event], loan_id: str) -> int:
    """What the ledger says the loan's card paid, net: clearing -> loan minus loan -> clearing."""
    net = 0
    for event in events:
        for posting in event["postings"]:
            into_loan = posting["credit"].startswith(f"loan:{loan_id}:")
            out_of_loan = posting["debit"].startswith(f"loan:{loan_id}:")
            if posting["debit"].startswith("channel:") and into_loan:
                net += posting["amount_minor"]
            if posting["credit"].startswith("channel:") and out_of_loan:
                net -= posting["amount_minor"]
    return net


def card_net(truth: AccountTruth) -> int:
    return truth.charged_minor - truth.reversed_minor - truth.refunded_minor


def of_type(events: list[Event], kind: str) -> list[Event]:
    return [event for event in events if event["type"] == kind]


def outcome_statuses(outcomes: dict[str, dict[str, Any]]) -> list[tuple[str, str | None]]:
    return sorted((o["status"], o.get("reason")) for o in outcomes.values())


def read_outcomes(pipeline: Pipeline) -> dict[str, list[bytes]]:
    return outcomes_by_command(pipeline.read("ledger.outcomes"))


def published_balances(pipeline: Pipeline) -> dict[str, int]:
    return balances_from_topic(pipeline.read("ledger.balances"))


def workdir_file(pipeline: Pipeline, name: str) -> Path:
    return pipeline.workdir / name


def saga_fixture(
    guarantee: str,
    bootstrap: str,
    workdir: Path,
    gateway: dict[str, str] | None = None,
) -> Iterator[Saga]:
    """The body of a module fixture: the processes up for the module, down at its end."""
    from streams.topics import ensure_topics

    pipeline = Pipeline(bootstrap, guarantee, workdir)
    ensure_topics(pipeline.settings)
    try:
        yield Saga.start(pipeline, gateway=gateway)
    finally:
        pipeline.stop()


# ---- a realistic workload and its settling ------------------------------------------------


Sent = Command | CloseBusinessDayForPartition


def workload(
    rng: random.Random, loans: list[str], ticks_on: int | None = None
) -> tuple[list[Sent], list[Sent]]:
    """Day one (open, first installment due, doors racing the auto-debit job) and day two.

    With `ticks_on` (the partition count), day two is closed by the business clock instead of
    a CloseBusinessDay per loan: the ticks of the day before (late fees for the unpaid), app
    requests from one loan in ten (their loans catch up first), then the second due date's."""
    first: list[Sent] = []
    second: list[Sent] = []
    for loan in loans:
        first.append(
            open_loan(
                f"open-{loan}",
                loan,
                borrower_id=f"B-{loan}",
                debit_account_ref=f"card-{loan}",
                principal_minor=rng.randrange(300_000, 3_000_000),
                term_months=rng.choice((2, 3, 6)),
            )
        )
        first.append(close_day(FIRST_DUE, f"close1-{loan}", loan))
        if rng.random() < 0.5:
            first.append(request(f"app-{loan}", Source.APP, loan))
        if rng.random() < 0.2:
            first.append(request(f"agent-{loan}", Source.COLLECTION, loan, requested_by="agent-3"))
        if ticks_on is None:
            second.append(close_day(SECOND_DUE, f"close2-{loan}", loan))
    if ticks_on is not None:
        eve = SECOND_DUE - timedelta(days=1)
        asking = [
            request(f"app2-{loan}", Source.APP, loan)
            for loan in rng.sample(loans, len(loans) // 10)
        ]
        second = [
            *business_day_ticks(eve, ticks_on, T0),
            *asking,
            *business_day_ticks(SECOND_DUE, ticks_on, T0),
        ]
    return first, second


def settled(saga: Saga, timeout_s: float = 600) -> tuple[LogFold, dict[str, list[dict[str, Any]]]]:
    """Wait until no attempt is in flight and no refund pending, for 5 s in a row."""
    quiet_since: float | None = None
    deadline = time.monotonic() + timeout_s
    while True:
        records = saga.pipeline.read("ledger.events")
        fold = LogFold().fold(records)
        by_loan: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for value in fold.by_seq.values():
            event = json.loads(value)
            by_loan[event["loan_id"]].append(event)
        busy = [loan for loan, events in by_loan.items() if _open_work(events)]
        if not busy:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 5:
                return fold, by_loan
        else:
            quiet_since = None
        assert time.monotonic() < deadline, f"{len(busy)} loans never settled, e.g. {busy[:3]}"
        time.sleep(2)


def _open_work(events: list[dict[str, Any]]) -> bool:
    opened = {e.get("attempt_id") or e.get("refund_id") for e in events if e["type"] in STARTS}
    closed = {e.get("attempt_id") or e.get("refund_id") for e in events if e["type"] in ENDS}
    return bool(opened - closed)


STARTS = {"DeductionStarted", "RefundStarted"}
ENDS = {"DeductionSucceeded", "DeductionFailed", "RefundSucceeded", "RefundFailed"}


def due_on(events: list[dict[str, Any]]) -> int:
    """Everything the loan can ever owe: the schedule plus late fees."""
    [opened] = [e for e in events if e["type"] == "LoanOpened"]
    scheduled = sum(
        row["principal_minor"] + row["interest_minor"] + row["fee_minor"]
        for row in opened["schedule"]
    )
    late_fees: int = sum(e["amount_minor"] for e in events if e["type"] == "LateFeeAssessed")
    return int(scheduled) + late_fees
