"""Pipeline: repayment cycles per second through the running processes, under both guarantees.

Two kinds of run, labelled as such:
- decider+projector: five commands a loan sent in one burst (open, close the due day, an app
  request, a refused collection request, the channel's success sent as a command), so only the
  worker is timed;
- full cycle via gateway: open and close the due day only; the gateway turns the auto-debit into
  a request, calls the (instant, always successful) channel simulator and reports the success.
A cycle is done when `ledger.balances` equals an independent fold of `ledger.events` with every
event of the cycles in it. The clock starts at the first send, after a warm-up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from streams.dev.bench import baseline
from streams.dev.bench.context import Bench
from streams.dev.bench.corpus import Workload, gateway_cycles, repayment_cycles
from streams.dev.bench.fleet import Fleet, fleet, send, warm_up
from streams.dev.bench.results import Figure, Goal, Report, ratio
from streams.dev.bench.tail import Tail, require
from streams.errors import LedgerError
from streams.topics import ensure_topics

SECTION = "pipeline"
CYCLES_GOAL = Goal(">= 5,000 cycles/s", at_least=5_000)
RAW_GOAL = Goal(">= 0.25 of raw consume", at_least=0.25, of_ratio=True)
EOS_GOAL = Goal(">= 0.85 of at_least_once", at_least=0.85, of_ratio=True)


@dataclass(frozen=True)
class Run:
    guarantee: str = "at_least_once"
    workers: int = 1
    gateway: bool = False

    @property
    def name(self) -> str:
        kind = "gateway" if self.gateway else "decider"
        return f"{kind}-{self.guarantee.replace('_', '')}-{self.workers}w"

    @property
    def label(self) -> str:
        kind = "full cycle via gateway" if self.gateway else "decider+projector"
        workers = "" if self.workers == 1 else f", {self.workers} workers"
        return f"{kind}, {self.guarantee}{workers}"


def run(bench: Bench, report: Report) -> None:
    loans, gateway_loans = bench.sizes.pipeline_loans, bench.sizes.gateway_loans
    runs = {
        "at_least_once": _measured(bench, report, Run(), loans),
        "exactly_once": _measured(bench, report, Run("exactly_once"), loans),
        "gateway": _measured(bench, report, Run(gateway=True), gateway_loans),
    }
    both = [runs[g].get("cycles_per_second") for g in ("exactly_once", "at_least_once")]
    eos = ratio(both[0], both[1])
    report.add(
        Figure(SECTION, "exactly_once vs at_least_once, cycles/s", eos, "x",
               eos, "at_least_once", EOS_GOAL)
    )  # fmt: skip
    report.details[SECTION] = runs


def _measured(bench: Bench, report: Report, run: Run, loans: int) -> dict[str, Any]:
    """One run's figures added to the report; a run that fails is reported, not fatal."""
    try:
        result = measure(bench, run, loans)
    except LedgerError as error:
        bench.console.print(f"[red]{run.label} failed:[/] {error}")
        report.add(Figure(SECTION, f"cycles/s, {run.label}", None, "cycles/s",
                          goal=CYCLES_GOAL, note=f"failed: {error}"[:160]))  # fmt: skip
        return {"run": run.label, "error": str(error)}
    add_figures(report, result)
    return result


def measure(bench: Bench, run: Run, loans: int, profile: bool = False) -> dict[str, Any]:
    cycles = gateway_cycles(loans) if run.gateway else repayment_cycles(loans)
    bench.console.print(f"pipeline: {run.label}, {loans} loans, {len(cycles.sent)} commands")
    with bench.section(run.name) as settings:
        ensure_topics(settings)
        logs = bench.logs(run.name)
        with fleet(settings, logs, run.guarantee, run.workers, run.gateway, profile) as started:
            tail = Tail(started.settings)
            try:
                warm_up(started, tail, run.gateway)
                result = _drive(started, tail, cycles, run.gateway)
            finally:
                tail.close()
    return {
        "run": run.label,
        "guarantee": run.guarantee,
        "workers": run.workers,
        "gateway": run.gateway,
        "logs": str(logs),
        **result,
    }


def _drive(started: Fleet, tail: Tail, cycles: Workload, via_gateway: bool) -> dict[str, Any]:
    outcomes_before, events_before = tail.outcomes, tail.fold.events
    updates_before = tail.updates.copy()
    timeout_s = 120.0 + len(cycles.sent) / 20
    clock = time.monotonic()
    sent_s = send(started.settings, cycles.sent)
    decided_s = None
    if not via_gateway:  # through the gateway, commands keep coming until the last cycle ends
        everything = len(cycles.sent) + outcomes_before
        decided = tail.wait(lambda: tail.outcomes >= everything, timeout_s, started.check_alive)
        decided_s = require(decided, "every outcome") - clock
    settled = tail.wait_settled(events_before + cycles.events, timeout_s, started.check_alive)
    settled_s = require(settled, "the balances to equal the fold of the log") - clock
    commands = tail.outcomes - outcomes_before  # the gateway's reports included
    events = tail.fold.events - events_before
    return {
        "loans": cycles.loans,
        "commands_sent": len(cycles.sent),
        "commands_decided": commands,
        "events": events,
        "send_seconds": round(sent_s, 3),
        "all_outcomes_seconds": None if decided_s is None else round(decided_s, 3),
        "balances_equal_fold_seconds": round(settled_s, 3),
        "cycles_per_second": round(cycles.loans / settled_s, 1),
        "decider_per_second": round(commands / (decided_s or settled_s), 1),
        "projector_per_second": round(events / settled_s, 1),
        "hot_account_updates_per_shard": tail.hot_shards(since=updates_before),
    }


def add_figures(report: Report, result: dict[str, Any]) -> None:
    label = result["run"]
    report.add(
        Figure(
            SECTION,
            f"cycles/s, {label}",
            result["cycles_per_second"],
            "cycles/s",
            goal=CYCLES_GOAL,
            note=f"{result['loans']} loans",
        )
    )
    for stage, unit, raw_name in (
        ("decider", "cmd/s", baseline.CONSUME_COMMANDS),
        ("projector", "events/s", baseline.CONSUME_EVENTS),
    ):
        value = result[f"{stage}_per_second"]
        raw = report.value(baseline.SECTION, raw_name)
        shown = raw_name if raw else "raw consume (baseline not run)"
        report.add(
            Figure(SECTION, f"{stage}, {label}", value, unit, ratio(value, raw), shown, RAW_GOAL)
        )
