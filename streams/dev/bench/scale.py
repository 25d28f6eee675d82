"""Scale: one worker process against two, and how a hot shared account spreads over partitions.

Every successful deduction posts to `channel:alpha:clearing`. The projector keeps that account
per events partition (records keyed `channel:alpha:clearing@{partition}`), so its updates should
spread over every partition instead of funnelling through one: counted on `ledger.balances`.
"""

from __future__ import annotations

from typing import Any

from streams.dev.bench import pipeline
from streams.dev.bench.context import Bench
from streams.dev.bench.pipeline import Run, measure
from streams.dev.bench.results import Figure, Report, ratio
from streams.dev.bench.tail import HOT_ACCOUNT

SECTION = "scale"


def run(bench: Bench, report: Report) -> None:
    loans = bench.sizes.pipeline_loans
    earlier = report.details.get(pipeline.SECTION, {}).get("at_least_once")
    reuse = earlier is not None and "error" not in earlier
    one = earlier if reuse else measure(bench, Run(), loans)
    two = measure(bench, Run(workers=2), loans)
    if not reuse:
        pipeline.add_figures(report, one)
    pipeline.add_figures(report, two)
    speedup = ratio(two["cycles_per_second"], one["cycles_per_second"])
    report.add(Figure(SECTION, "2 workers vs 1, cycles/s", speedup, "x", speedup, "1 worker"))
    for result in (one, two):
        _hot_account(report, result, bench.partitions)
    report.details[SECTION] = {"one_worker": one, "two_workers": two}


def _hot_account(report: Report, result: dict[str, Any], partitions: int) -> None:
    shards: dict[str, int] = result["hot_account_updates_per_shard"]
    total = sum(shards.values())
    per_second = total / result["balances_equal_fold_seconds"]
    busiest = max(shards.values(), default=0)
    per_shard = " ".join(f"{key.rsplit('@', 1)[1]}:{n}" for key, n in shards.items())
    report.add(
        Figure(
            SECTION,
            f"{HOT_ACCOUNT} shards updated, {result['workers']} worker(s)",
            len(shards),
            f"of {partitions}",
            note=f"updates per shard {per_shard}",
        )
    )
    report.add(
        Figure(
            SECTION,
            f"{HOT_ACCOUNT} busiest shard share, {result['workers']} worker(s)",
            None if total == 0 else busiest / total,
            "of updates",
            note=f"{total} updates ({per_second:,.0f}/s); an even spread is {1 / partitions:.3f}",
        )
    )
