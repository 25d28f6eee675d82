"""Pipeline throughput on its own broker: `python -m streams.dev.bench.throughput --loans 2000`.

Starts a broker in a temporary folder and one worker (or several), sends full repayment cycles
(5 commands a loan) in one burst, and reports commands per second until every outcome is out
and the balances topic equals an independent fold of the log. A program that prints figures,
not a test. `--profile` runs the first worker under py-spy and writes a flame graph (SVG)
beside its log. The same measurement is the pipeline section of `python -m streams.dev.bench`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from streams.dev.bench.context import FULL, Bench
from streams.dev.bench.pipeline import Run, measure
from streams.dev.localkafka import LocalBroker, free_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loans", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument(
        "--guarantee", choices=["at_least_once", "exactly_once"], default="at_least_once"
    )
    parser.add_argument(
        "--profile", action="store_true", help="record the first worker with py-spy"
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    broker = LocalBroker(home=workdir / "kafka", port=free_port(), controller_port=free_port())
    bootstrap = broker.up()
    try:
        print(json.dumps(_run(args, bootstrap, workdir), indent=2))
    finally:
        broker.down()


def _run(args: argparse.Namespace, bootstrap: str, workdir: Path) -> dict[str, Any]:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    console = Console(stderr=True)
    bench = Bench(bootstrap, FULL, stamp, workdir, console, partitions=args.partitions)
    run = Run(args.guarantee, args.workers)
    result = measure(bench, run, args.loans, profile=args.profile)
    return {
        "commands": result["commands_sent"],
        "guarantee": args.guarantee,
        "workers": args.workers,
        "partitions": args.partitions,
        "send_seconds": result["send_seconds"],
        "all_outcomes_seconds": result["all_outcomes_seconds"],
        "commands_per_second": result["decider_per_second"],
        "balances_equal_fold_seconds": result["balances_equal_fold_seconds"],
        "cycles_per_second": result["cycles_per_second"],
        "channel_alpha_clearing_updates_per_shard": result["hot_account_updates_per_shard"],
        "workdir": str(workdir),
    }


if __name__ == "__main__":
    main()
