"""Replay: `ledger replay` over a large event log, against raw consume plus decode of the same.

The log is copies of a really decided base (`corpus.templates`): every copy is its own set of
loans with its own accounts and event ids, each loan's events in seq order on its partition,
and balanced, so the replay must end with balances summing to 0. The command runs as operators
run it, in its own process; its figure is the fold's own timing (its `--json` summary), and the
process's wall time (interpreter start, imports, printing the balances) is shown beside it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Message

from schemas.topics import EVENTS
from streams.dev.bench.context import Bench
from streams.dev.bench.corpus import Templates
from streams.dev.bench.kafkaio import consume_all, create_topic, produce_all
from streams.dev.bench.results import Figure, Goal, Report, ratio
from streams.settings import LedgerSettings

SECTION = "replay"
REPLAY_TIMEOUT_S = 1_800.0


def run(bench: Bench, report: Report, corpus: Templates) -> None:
    count = bench.sizes.replay_events
    with bench.section(SECTION) as settings:
        topic = create_topic(settings, EVENTS.name, EVENTS.configs())
        bench.console.print(f"replay: writing {count:,} events to {topic}")
        written_s = produce_all(settings, topic, corpus.copies("events", count))
        consume_s = consume_all(settings, topic, count)
        decode_s = consume_all(settings, topic, count, _decode_batch)
        replayed = _ledger_replay(settings, bench.logs(SECTION) / "replay.json")
    raw = count / decode_s
    replay_rate = replayed.get("events_per_second")
    report.add(Figure(SECTION, "raw consume", count / consume_s, "events/s"))
    report.add(Figure(SECTION, "raw consume + orjson decode", raw, "events/s"))
    report.add(
        Figure(
            SECTION,
            "ledger replay",
            replay_rate,
            "events/s",
            ratio(replay_rate, raw),
            "raw consume+decode",
            Goal(">= 0.7 of raw consume+decode", at_least=0.7, of_ratio=True),
            note=replayed["how"],
        )
    )
    report.add(
        Figure(
            SECTION,
            "ledger replay, absolute",
            replay_rate,
            "events/s",
            goal=Goal(">= 200,000 events/s", at_least=200_000),
        )
    )
    wall = replayed.get("wall_seconds")
    wall_rate = None if not wall else count / wall
    report.add(Figure(SECTION, "ledger replay, process wall time", wall_rate, "events/s",
                      note="incl. start-up and printing the balances"))  # fmt: skip
    report.details[SECTION] = {
        "events": count,
        "write_seconds": round(written_s, 3),
        "raw_consume_seconds": round(consume_s, 3),
        "raw_consume_decode_seconds": round(decode_s, 3),
        "ledger_replay": replayed,
    }


def _decode_batch(batch: list[Message]) -> None:
    loads = orjson.loads
    for message in batch:
        loads(message.value() or b"")


def _ledger_replay(settings: LedgerSettings, output: Path) -> dict[str, Any]:
    """Run `ledger replay --json`; if it cannot run, fold in-process and say so."""
    command = [
        sys.executable, "-m", "streams.cli.main",
        "--bootstrap-servers", settings.bootstrap_servers,
        "--topic-prefix", settings.topic_prefix,
        "replay", "--json", "--no-progress",
    ]  # fmt: skip
    started = time.perf_counter()
    with output.open("wb") as out:
        done = subprocess.run(
            command, stdout=out, stderr=subprocess.PIPE, timeout=REPLAY_TIMEOUT_S, check=False
        )
    wall = time.perf_counter() - started
    try:
        summary = orjson.loads(output.read_bytes())["summary"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        reason = done.stderr.decode(errors="replace").strip()[-300:]
        return _in_process(settings) | {"how": f"in-process fold; the CLI failed: {reason}"}
    return {
        "how": "ledger replay --json (subprocess)",
        "exit_code": done.returncode,
        "wall_seconds": round(wall, 3),
        **summary,
    }


def _in_process(settings: LedgerSettings) -> dict[str, Any]:
    """The fold `ledger replay` runs (ledger.replay.ReplayFold over streams.logread)."""
    from ledger.replay import ReplayFold
    from streams.logread import LogReader

    fold = ReplayFold(loads=orjson.loads)
    started = time.perf_counter()
    with LogReader(settings, EVENTS.name) as reader:
        for batch in reader.batches():
            fold.fold(map(Message.value, batch))
    seconds = time.perf_counter() - started
    return fold.summary(seconds, None) | {"wall_seconds": None}
