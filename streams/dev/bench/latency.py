"""Latency: command produced -> balance visible, at a fixed open-loop offered rate.

The sender does not wait for answers: command i is due at start + i/rate (a token bucket checked
every millisecond), and its latency is measured from that due time, so a sender that falls
behind cannot hide the delay (no coordinated omission). Commands are the decider+projector
cycle (`corpus.repayment_cycles`), decided beforehand so the benchmark knows which event ids
will move balances. A reader in another process (`visibility`) notes when each outcome and each
balance update becomes visible (read_committed). One worker; every rate under at_least_once,
and the goal's rate under exactly_once too.

If the pipeline decides fewer than 90 % of the offered commands while they are being sent, it
cannot keep up: the run is reported as "saturated: achieved X/s", not as latencies (which would
only measure the length of the queue).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from schemas.topics import COMMANDS
from streams.dev.bench.context import Bench
from streams.dev.bench.corpus import Decided, repayment_cycles
from streams.dev.bench.fleet import Fleet, fleet, warm_up
from streams.dev.bench.kafkaio import warm
from streams.dev.bench.results import Figure, Goal, Report
from streams.dev.bench.tail import Tail
from streams.dev.bench.visibility import Counters, reading
from streams.settings import LedgerSettings
from streams.topics import ensure_topics

SECTION = "latency"
KEEPING_UP = 0.9
GOAL_RATE = 1_000
P99_GOAL = Goal("p99 <= 250 ms", at_most=250.0)
QUANTILES = (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999))


def run(bench: Bench, report: Report) -> None:
    results = [measure(bench, rate) for rate in bench.sizes.latency_rates]
    results.append(measure(bench, GOAL_RATE, "exactly_once"))
    for result in results:
        _add_figures(report, result)
    report.details[SECTION] = results


def measure(bench: Bench, rate: int, guarantee: str = "at_least_once") -> dict[str, Any]:
    seconds = min(bench.sizes.latency_seconds, bench.sizes.latency_max_commands / rate)
    cycles = repayment_cycles(max(1, int(rate * seconds) // 5), tag=f"lat{rate}").sent
    bench.console.print(f"latency: {len(cycles)} commands at {rate}/s offered, {guarantee}")
    name = f"latency-{rate}-{guarantee.replace('_', '')}"
    with bench.section(name) as settings:
        ensure_topics(settings)
        with fleet(settings, bench.logs(name), guarantee, 1, gateway=False) as started:
            tail = Tail(started.settings)
            try:
                warm_up(started, tail, gateway=False)
            finally:
                tail.close()
            found = _observe(started, cycles, rate, bench.logs(name) / "visible.json")
    return {"offered_per_second": rate, "guarantee": guarantee, "commands": len(cycles), **found}


@dataclass(frozen=True)
class Sent:
    due: list[float]  # wall-clock time each command was due
    seconds: float
    max_lag_ms: float  # how late the sender produced a command, at worst


def _observe(started: Fleet, cycles: list[Decided], rate: int, output: Path) -> dict[str, Any]:
    commands = frozenset(d.command.command_id for d in cycles)
    events: dict[str, list[str]] = {}
    for decided in cycles:  # a loan's commands are in order, so its events are in seq order
        events.setdefault(decided.command.loan_id, []).extend(decided.posting_event_ids)
    with reading(started.settings, commands, events, output) as counters:
        sent = _open_loop(started.settings, cycles, rate)
        decided = counters.outcomes.value
        saturated = decided < KEEPING_UP * len(cycles)
        if not saturated:
            posting_events = sum(map(len, events.values()))
            _drain(started, counters, len(commands), posting_events, sent.seconds)
    window = {"decided_while_sending": decided, "achieved_per_second": decided / sent.seconds}
    summary = {"send_seconds": round(sent.seconds, 3), "sender_max_lag_ms": sent.max_lag_ms}
    if saturated:
        return {"saturated": True, **summary, **window}
    return {"saturated": False, **summary, **window, **_latencies(cycles, sent, output)}


def _open_loop(settings: LedgerSettings, cycles: list[Decided], rate: int) -> Sent:
    records = [(d.command.loan_id.encode(), d.command.model_dump_json().encode()) for d in cycles]
    producer = Producer(settings.producer_config())
    topic = settings.topic(COMMANDS.name)
    warm(settings, producer, topic)
    start = time.time() + 0.05
    due = [start + i / rate for i in range(len(records))]
    worst, index = 0.0, 0
    while index < len(records):
        now = time.time()
        while index < len(records) and due[index] <= now:
            producer.produce(topic, records[index][1], records[index][0])
            worst = max(worst, now - due[index])
            index += 1
        producer.poll(0)
        if index < len(records):
            time.sleep(max(0.0, min(due[index] - time.time(), 0.001)))
    producer.flush(60)
    return Sent(due, time.time() - start, round(worst * 1000, 1))


def _drain(started: Fleet, counters: Counters, outcomes: int, events: int, sent_s: float) -> None:
    """Until every outcome and every expected balance update is visible (bounded)."""
    deadline = time.monotonic() + max(10.0, sent_s)
    while time.monotonic() < deadline:
        if counters.outcomes.value >= outcomes and counters.balanced_events.value >= events:
            return
        started.check_alive()
        time.sleep(0.1)


def _latencies(cycles: list[Decided], sent: Sent, output: Path) -> dict[str, Any]:
    seen = orjson.loads(output.read_bytes())
    outcome_ms, balance_ms, missing = [], [], 0
    for decided, due in zip(cycles, sent.due, strict=True):
        visible = seen["outcomes"].get(decided.command.command_id)
        if visible is None:
            missing += 1
            continue
        outcome_ms.append((visible - due) * 1000)
        if decided.posting_event_ids:
            times = [seen["balances"].get(e) for e in decided.posting_event_ids]
            if None in times:
                missing += 1
                continue
            balance_ms.append((max(times) - due) * 1000)
    return {
        "outcome_visible_ms": _quantiles(outcome_ms),
        "balance_visible_ms": _quantiles(balance_ms),
        "commands_with_balance_updates": len(balance_ms),
        "not_visible_in_time": missing,
    }


def _quantiles(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    found: dict[str, float | None] = {}
    for name, q in QUANTILES:
        index = min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)
        found[name] = round(ordered[index], 1) if ordered else None
    return found


def _add_figures(report: Report, result: dict[str, Any]) -> None:
    rate = result["offered_per_second"]
    goal = P99_GOAL if rate == GOAL_RATE else None
    at = f"{rate:,}/s" + (", exactly_once" if result["guarantee"] == "exactly_once" else "")
    if result["saturated"]:
        achieved = result["achieved_per_second"]
        report.add(
            Figure(
                SECTION,
                f"balance visible @ {at}",
                None,
                "ms",
                goal=goal,
                note=f"saturated: achieved {achieved:,.0f}/s of {rate:,}/s offered",
                failed=True,
            )
        )
        return
    for what in ("balance", "outcome"):
        count = result["commands_with_balance_updates"] if what == "balance" else result["commands"]
        for name, value in result[f"{what}_visible_ms"].items():
            shown_goal = goal if (what, name) == ("balance", "p99") else None
            report.add(
                Figure(
                    SECTION,
                    f"{what} visible {name} @ {at}",
                    value,
                    "ms",
                    goal=shown_goal,
                    note=f"of {count:,} commands",
                )
            )
