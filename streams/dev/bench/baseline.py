"""Baseline: raw confluent-kafka produce and consume of records shaped like ours, and decoding.

The records are copies of really decided commands and events (`corpus.templates`), so counts
and sizes match what the ledger moves: N commands, and the events those commands make.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from statistics import median
from typing import Any

import orjson

from schemas.commands import parse_command
from schemas.events import parse_event
from schemas.topics import COMMANDS, EVENTS
from streams.dev.bench.context import Bench
from streams.dev.bench.corpus import Keyed, Templates
from streams.dev.bench.kafkaio import consume_all, create_topic, produce_all
from streams.dev.bench.results import Figure, Report

SECTION = "baseline"
PRODUCE_COMMANDS = "raw produce, commands"
PRODUCE_EVENTS = "raw produce, events"
CONSUME_COMMANDS = "raw consume, commands"
CONSUME_EVENTS = "raw consume, events"
DECODE_ORJSON = "decode events, orjson"
REPEATS = 3  # a busy machine makes single short runs noisy


def run(bench: Bench, report: Report, corpus: Templates) -> None:
    count = bench.sizes.raw_messages
    commands = list(corpus.copies("commands", count))
    events = list(corpus.copies("events", round(count * corpus.events_per_command)))
    details: dict[str, Any] = {}
    with bench.section(SECTION) as settings:
        for kind, records in (("commands", commands), ("events", events)):
            spec = COMMANDS if kind == "commands" else EVENTS
            produced, consumed = [], []
            for attempt in range(REPEATS):  # each on its own topic; the median is reported
                topic = create_topic(settings, f"raw.{kind}.{attempt}", spec.configs())
                produced.append(produce_all(settings, topic, records))
                consumed.append(consume_all(settings, topic, len(records)))
            details[kind] = _rates(records, median(produced), median(consumed))
            details[kind]["produce_seconds_each"] = [round(s, 3) for s in produced]
            details[kind]["consume_seconds_each"] = [round(s, 3) for s in consumed]
            _add_kafka_figures(report, kind, details[kind])
    details["decode"] = _decode_rates(commands, events)
    for name, rate in details["decode"].items():
        report.add(Figure(SECTION, name, rate, "records/s"))
    report.details[SECTION] = details


def _rates(records: list[Keyed], produced_s: float, consumed_s: float) -> dict[str, Any]:
    size = sum(len(value) for _key, value in records)
    return {
        "records": len(records),
        "mean_value_bytes": round(size / len(records), 1),
        "produce_seconds": round(produced_s, 3),
        "produce_per_second": round(len(records) / produced_s),
        "produce_mib_per_second": round(size / produced_s / 2**20, 1),
        "consume_seconds": round(consumed_s, 3),
        "consume_per_second": round(len(records) / consumed_s),
        "consume_mib_per_second": round(size / consumed_s / 2**20, 1),
    }


def _add_kafka_figures(report: Report, kind: str, rates: dict[str, Any]) -> None:
    size = f"{rates['mean_value_bytes']:.0f} B mean"
    for verb in ("produce", "consume"):
        report.add(
            Figure(
                SECTION,
                f"raw {verb}, {kind}",
                rates[f"{verb}_per_second"],
                "msg/s",
                note=f"{rates[f'{verb}_mib_per_second']} MiB/s, {size}",
            )
        )


def _decode_rates(commands: list[Keyed], events: list[Keyed]) -> dict[str, float]:
    event_values = [value for _key, value in events]
    command_values = [value for _key, value in commands]
    return {
        "decode events, json": _rate(json.loads, event_values),
        DECODE_ORJSON: _rate(orjson.loads, event_values),
        "parse events, pydantic": _rate(parse_event, event_values),
        "parse commands, pydantic": _rate(parse_command, command_values),
    }


def _rate(decode: Callable[[bytes], Any], values: list[bytes]) -> float:
    """Records per second, the median of REPEATS passes."""
    seconds = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        for value in values:
            decode(value)
        seconds.append(time.perf_counter() - started)
    return round(len(values) / median(seconds))
