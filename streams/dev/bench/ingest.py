"""Ingest: commands sent through `LedgerClient.send_many` (idempotent producer), against raw.

Two figures, so the gap can be explained: the client as upstream services use it (it encodes
each pydantic command), and a raw producer with the client's very settings on pre-encoded bytes.
"""

from __future__ import annotations

import time

from schemas.commands import Command, parse_command
from schemas.topics import COMMANDS
from streams.client import LedgerClient
from streams.dev.bench import baseline
from streams.dev.bench.context import Bench
from streams.dev.bench.corpus import Templates
from streams.dev.bench.kafkaio import create_topic, produce_all
from streams.dev.bench.results import Figure, Report, ratio
from streams.settings import LedgerSettings
from streams.topics import ensure_topics

SECTION = "ingest"
CLIENT = "LedgerClient.send_many"


def run(bench: Bench, report: Report, corpus: Templates) -> None:
    first, *records = corpus.copies("commands", bench.sizes.raw_messages + 1)
    warm_up = parse_command(first[1])
    commands = [parse_command(value) for _key, value in records]
    raw = report.value(baseline.SECTION, baseline.PRODUCE_COMMANDS)
    with bench.section(SECTION) as settings:
        ensure_topics(settings)
        client_s = _send_many(settings, warm_up, commands)
        # A fresh topic like the client's and the baseline's: a topic's first records cost more.
        fresh = create_topic(settings, "raw.commands", COMMANDS.configs())
        same_config_s = produce_all(settings, fresh, records, settings.producer_config())
    client_rate = len(commands) / client_s
    config_rate = len(records) / same_config_s
    raw_name = "raw produce" if raw else "raw produce (baseline not run)"
    report.add(Figure(SECTION, CLIENT, client_rate, "cmd/s", ratio(client_rate, raw), raw_name))
    report.add(
        Figure(
            SECTION,
            "client's producer settings, pre-encoded",
            config_rate,
            "msg/s",
            ratio(config_rate, raw),
            raw_name,
            note="linger.ms=5, idempotent; no pydantic encoding",
        )
    )
    report.details[SECTION] = {
        "commands": len(commands),
        "client_seconds": round(client_s, 3),
        "client_producer_settings_seconds": round(same_config_s, 3),
    }


def _send_many(settings: LedgerSettings, warm_up: Command, commands: list[Command]) -> float:
    """Seconds `send_many` takes (it returns once every command is acknowledged), after one
    command sent alone: the producer's start-up is not throughput (see `kafkaio.warm`)."""
    with LedgerClient(settings, watch_outcomes=False) as client:
        client.send_many([warm_up])
        started = time.perf_counter()
        client.send_many(commands)
        return time.perf_counter() - started
