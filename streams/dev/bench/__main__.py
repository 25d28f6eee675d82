"""`python -m streams.dev.bench [--quick] [--out FILE] [--only baseline,...]`: the benchmarks.

Measures, in one run on one broker, raw confluent-kafka against the ledger: baseline (raw
produce, consume, decode), ingest (the client), pipeline (cycles per second under both
guarantees, and through the gateway), latency (open-loop, produced -> balance visible), replay
(`ledger replay` over a large log), scale (two workers, the hot shared account), restore (a
partition of many loans from its snapshots, after a week and a year) and core (`decide` by a
loan's age, memory per loan state, no broker) and clock (a year of business days closed per loan
or by one tick per partition, no broker). Prints a
table (figure, value, ratio to raw, goal, met?) and writes it as JSON. Goals are reported, never
asserted. Starts the local broker unless KAFKA_BOOTSTRAP_SERVERS or --bootstrap-servers names one;
every section works on its own fresh topic prefix, deleted afterwards (--keep-topics keeps them).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from streams.dev.bench import (
    baseline,
    clock,
    core,
    ingest,
    latency,
    pipeline,
    replay,
    restore,
    scale,
)
from streams.dev.bench.context import FULL, QUICK, Bench, machine
from streams.dev.bench.corpus import Templates, templates
from streams.dev.bench.results import Figure, Report, show
from streams.dev.localkafka import KAFKA_VERSION, LocalBroker

HOME = Path(".local")
Section = Callable[[Bench, Report, Templates], None]
SECTIONS: dict[str, Section] = {
    "baseline": baseline.run,
    "ingest": ingest.run,
    "pipeline": lambda bench, report, _corpus: pipeline.run(bench, report),
    "latency": lambda bench, report, _corpus: latency.run(bench, report),
    "replay": replay.run,
    "scale": lambda bench, report, _corpus: scale.run(bench, report),
    "restore": lambda bench, report, _corpus: restore.run(bench, report),
    "core": lambda bench, report, _corpus: core.run(bench, report),
    "clock": lambda bench, report, _corpus: clock.run(bench, report),
}


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    chosen = _sections(arguments.only)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    workdir = (HOME / "bench" / stamp).resolve()
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    named = arguments.bootstrap_servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None if named else LocalBroker(home=(HOME / "kafka").resolve())
    started_broker = broker is not None and not broker.is_ready()
    bootstrap = named or _local_broker(broker, console)
    sizes = QUICK if arguments.quick else FULL
    if arguments.latency_rates:
        sizes = replace(sizes, latency_rates=arguments.latency_rates)
    bench = Bench(bootstrap, sizes, stamp, workdir, console, arguments.keep_topics)
    report = Report(run=_run_description(arguments, bench, chosen, named))
    try:
        _run_sections(bench, report, chosen)
    finally:
        if started_broker and broker is not None:
            broker.down()
    show(report, console, f"Benchmarks ({'QUICK, preliminary' if arguments.quick else 'full'})")
    out = arguments.out or workdir / "bench.json"
    report.write(out)
    console.print(f"JSON: {out}   logs: {workdir}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m streams.dev.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: proves it runs")
    parser.add_argument("--out", type=Path, help="JSON file [default: .local/bench/STAMP/]")
    parser.add_argument("--only", help=f"comma-separated sections of: {','.join(SECTIONS)}")
    parser.add_argument("--bootstrap-servers", help="an existing broker; none is started")
    parser.add_argument("--keep-topics", action="store_true", help="do not delete bench topics")
    parser.add_argument(
        "--latency-rates",
        type=_rates,
        help="offered commands/s, comma-separated [default: 100,1000,5000; quick: 30,1000]",
    )
    return parser


def _rates(text: str) -> tuple[int, ...]:
    try:
        rates = tuple(int(rate) for rate in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write rates like 100,1000") from None
    if not rates or min(rates) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: rates must be positive")
    return rates


def _sections(only: str | None) -> list[str]:
    if not only:
        return list(SECTIONS)
    wanted = [name.strip() for name in only.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown section {unknown[0]}: choose among {', '.join(SECTIONS)}")
    return [name for name in SECTIONS if name in wanted]  # the order ratios need


def _local_broker(broker: LocalBroker | None, console: Console) -> str:
    assert broker is not None
    if not broker.is_ready():
        console.print("starting the local Kafka broker (the first run downloads its jars)...")
    return broker.up()


def _run_description(
    arguments: argparse.Namespace, bench: Bench, chosen: list[str], named: str | None
) -> dict[str, object]:
    return {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": arguments.quick,
        "sections": chosen,
        "sizes": bench.sizes.__dict__,
        "partitions": bench.partitions,
        "bootstrap": bench.bootstrap,
        "machine": machine(f"external broker at {named}" if named else KAFKA_VERSION),
    }


def _run_sections(bench: Bench, report: Report, chosen: list[str]) -> None:
    needs_corpus = {"baseline", "ingest", "replay"} & set(chosen)
    corpus = templates(bench.sizes.base_loans) if needs_corpus else Templates((), (), "")
    for name in chosen:
        bench.console.rule(name)
        started = time.monotonic()
        try:
            SECTIONS[name](bench, report, corpus)
        except Exception as error:  # one section failing must not lose the others' figures
            _record_failure(bench, report, name, error)
        report.details.setdefault("seconds", {})[name] = round(time.monotonic() - started, 1)


def _record_failure(bench: Bench, report: Report, name: str, error: Exception) -> None:
    log = bench.logs(name) / "error.txt"
    log.write_text(traceback.format_exc())
    bench.console.print(f"[red]{name} failed:[/] {error} (traceback in {log})")
    report.add(Figure(name, "section failed", None, "", note=f"{error}"[:160]))


if __name__ == "__main__":
    sys.exit(main())
