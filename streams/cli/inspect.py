"""Operators' inspection commands: balances, a loan's history, replaying the log, exports.

Exit codes: 0 done; 1 the answer is no (nothing found, verification failed); 2 a usage error
or Kafka out of reach, with a message saying what to do. `--json` output is for programs.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ledger import timeline
from ledger.replay import (
    Cut,
    Difference,
    PublishedBalance,
    ReplayFold,
    differences,
    iso_ms,
    parse_cut,
    published_balances,
    replay_json,
)
from ledger.timeline import LoanHistory, history_json, loan_history, money
from streams.errors import LedgerError, RefusedError
from streams.settings import LedgerSettings

if TYPE_CHECKING:
    from schemas.events import Event

# ---- reading -----------------------------------------------------------------------------------


def _published(settings: LedgerSettings) -> dict[str, PublishedBalance]:
    """Every account's balance on `ledger.balances`, shards summed."""
    import orjson

    from schemas.topics import BALANCES
    from streams.logread import read_log

    records = ((r.key, r.value, r.timestamp_ms) for r in read_log(settings, BALANCES.name))
    try:
        return published_balances(records, orjson.loads)
    except (ValueError, KeyError, TypeError) as error:
        raise LedgerError(
            f"{settings.topic(BALANCES.name)} holds a record that is not a balance ({error!r}): "
            "is --topic-prefix right?"
        ) from error


def _loan_events(settings: LedgerSettings, loan_id: str) -> tuple[list[Event], int]:
    """The loan's events in log order, and how many of its records were not valid events.
    Its partition (murmur2, as every producer of the ledger uses) is read first; the others
    only when that one holds nothing for the loan."""
    from confluent_kafka import murmur2

    from schemas.topics import EVENTS
    from streams.logread import partition_count

    count = partition_count(settings, EVENTS.name)
    home = murmur2(loan_id.encode(), count)
    events, invalid = _events_in(settings, loan_id, [home])
    if not events and not invalid:
        events, invalid = _events_in(settings, loan_id, [p for p in range(count) if p != home])
    return events, invalid


def _events_in(
    settings: LedgerSettings, loan_id: str, partitions: list[int]
) -> tuple[list[Event], int]:
    from pydantic import ValidationError

    from schemas.events import parse_event
    from schemas.topics import EVENTS
    from streams.logread import read_log

    key, events, invalid = loan_id.encode(), [], 0
    for record in read_log(settings, EVENTS.name, partitions=partitions):
        if record.key != key:
            continue
        try:
            events.append(parse_event(record.value or b""))
        except ValidationError:
            invalid += 1
    return [e for e in events if e.loan_id == loan_id], invalid


# ---- output ------------------------------------------------------------------------------------


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def _table(title: str, headers: list[str], rows: list[list[str]], numeric: set[int]) -> None:
    """A rich table on a terminal; aligned plain text otherwise, for pipes and grep."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, title_justify="left")
        for index, header in enumerate(headers):
            table.add_column(header, justify="right" if index in numeric else "left")
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        return
    widths = [max(len(line) for line in [h, *(r[i] for r in rows)]) for i, h in enumerate(headers)]
    click.echo(title)
    for row in [headers, *rows]:
        cells = [
            cell.rjust(width) if index in numeric else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        click.echo("  " + "  ".join(cells).rstrip())


def _show_balances(title: str, balances: list[tuple[str, int, str]]) -> None:
    _table(title, timeline.BALANCE_HEADERS, timeline.balance_cells(balances), {1, 3})


# ---- balance, balances ---------------------------------------------------------------------------

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON, for programs.")


@click.command("balance")
@click.argument("account")
@JSON_OPTION
@click.pass_obj
def balance_command(settings: LedgerSettings, account: str, as_json: bool) -> None:
    """Show one account's current balance.

    Read from ledger.balances: debits minus credits, a shared account's shards summed, e.g.
    `ledger balance channel:alpha:clearing`. Exit 1 if the account has no balance."""
    found = _published(settings).get(account)
    if found is None:
        raise RefusedError(
            f"no balance for account {account}: an account has one from its first posting; "
            "`ledger balances --loan ID` lists a loan's accounts"
        )
    if as_json:
        _echo_json(found.as_json())
        return
    shards = f", {len(found.shards)} shards" if found.shards[0].shard is not None else ""
    click.echo(
        f"{account}  {money(found.balance_minor, found.currency)}  "
        f"(as of {iso_ms(found.as_of_ms)}{shards})"
    )


@click.command("balances")
@click.option("--loan", "loan_id", required=True, help="The loan whose accounts to list.")
@JSON_OPTION
@click.pass_obj
def balances_command(settings: LedgerSettings, loan_id: str, as_json: bool) -> None:
    """Show the balance of every account of one loan.

    The accounts loan:LOAN:* on ledger.balances. Exit 1 if the loan has none."""
    prefix = f"loan:{loan_id}:"
    found = [b for account, b in _published(settings).items() if account.startswith(prefix)]
    if not found:
        raise RefusedError(f"no accounts for loan {loan_id}: check the loan id and --topic-prefix")
    if as_json:
        _echo_json({"loan_id": loan_id, "accounts": [b.as_json() for b in found]})
        return
    rows = [(b.account, b.balance_minor, b.currency) for b in found]
    _show_balances(f"loan {loan_id}", rows)


# ---- history -------------------------------------------------------------------------------------


@click.command("history")
@click.argument("loan_id", metavar="LOAN")
@JSON_OPTION
@click.pass_obj
def history_command(settings: LedgerSettings, loan_id: str, as_json: bool) -> None:
    """Show a loan's events as a timeline.

    Event by event in seq order: what happened and its postings; then the attempts and refunds
    and what the events posted. Amounts read in major units (yuan), with the exact minor units
    in parentheses. Exit 1 if the loan has no events."""
    events, invalid = _loan_events(settings, loan_id)
    if not events:
        raise RefusedError(f"no events for loan {loan_id}: check the loan id and --topic-prefix")
    history = loan_history(loan_id, events)
    if as_json:
        _echo_json(history_json(history))
    else:
        _print_history(history)
    if invalid:
        click.echo(f"warning: {invalid} records of the loan are not valid events", err=True)


def _print_history(history: LoanHistory) -> None:
    _timeline(f"loan {history.loan_id} ({history.currency})", timeline.timeline_cells(history))
    if history.gap is not None:
        click.echo(f"SEQ GAP: expected seq {history.gap[0]}, found {history.gap[1]}")
    if history.repeats:
        click.echo(f"({history.repeats} repeated events, as after a crash, shown once)")
    _table("\nattempts", timeline.ATTEMPT_HEADERS, timeline.attempt_cells(history), {3, 4})
    if history.refunds:
        _table("\nrefunds", timeline.REFUND_HEADERS, timeline.refund_cells(history), {2})
    balances = [(a, amount, history.currency) for a, amount in history.balances.items()]
    _show_balances("\nnet postings of these events, per account", balances)


def _timeline(title: str, rows: list[list[str]]) -> None:
    if sys.stdout.isatty():
        _table(title, ["seq", "occurred (UTC)", "event", "what happened", "postings"], rows, {0})
        return
    # Plain text: one line per event, its postings indented below, so grep finds either.
    click.echo(title)
    for seq, when, kind, summary, postings in rows:
        click.echo(f"{seq:>5}  {when}  {kind:<24}  {summary}")
        for line in filter(None, postings.split("\n")):
            click.echo(f"{'':>28}{line}")


# ---- replay --------------------------------------------------------------------------------------


class CutType(click.ParamType[Cut, Any]):
    name = "TIME|P:O,..."

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Cut:
        if isinstance(value, Cut):
            return value
        try:
            return parse_cut(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


@click.command("replay")
@click.option(
    "--until",
    "cut",
    type=CutType(),
    help="Stop at a moment: events whose Kafka record timestamp is at or before an RFC 3339 "
    "time (each partition cut before its first later record); or at offsets P:O,P:O (events "
    "below offset O of partition P; unlisted partitions are read to their end).",
)
@click.option(
    "--verify",
    is_flag=True,
    help="Compare with ledger.balances and exit 1 on any difference (needs a settled pipeline).",
)
@JSON_OPTION
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar on stderr [default: when stderr is a terminal].",
)
@click.pass_obj
def replay_command(
    settings: LedgerSettings, cut: Cut | None, verify: bool, as_json: bool, progress: bool | None
) -> None:
    """Rebuild every balance from the event log.

    Fold ledger.events into balances (a loan's repeated seqs, as after a crash, skipped) and
    print a summary and the balances. Exit 1 if they do not sum to 0 or --verify finds a
    difference."""
    if verify and cut is not None:
        raise click.UsageError("--verify compares with today's balances: leave out --until")
    shown = sys.stderr.isatty() if progress is None else progress
    fold, seconds = _replay(settings, cut or Cut("end"), shown)
    mismatches = _verify(settings, fold) if verify else None
    summary = fold.summary(seconds, cut)
    if as_json:
        _echo_json(replay_json(fold, summary, mismatches))
    else:
        _print_replay(fold, summary, mismatches)
    if fold.total_minor != 0:
        raise RefusedError(f"the balances sum to {fold.total_minor}, not 0: the log is unbalanced")
    if mismatches:
        accounts = (
            "1 account differs" if len(mismatches) == 1 else f"{len(mismatches)} accounts differ"
        )
        raise RefusedError(f"verification failed: {accounts} from ledger.balances")


def _replay(settings: LedgerSettings, cut: Cut, shown: bool) -> tuple[ReplayFold, float]:
    import orjson
    from confluent_kafka import Message

    from schemas.topics import EVENTS
    from streams.logread import LogReader

    fold = ReplayFold(loads=orjson.loads)
    started = time.perf_counter()
    with (
        LogReader(settings, EVENTS.name, stops=cut.stops, until_ms=cut.until_ms) as reader,
        _progress(reader.total, shown) as advance,
        _collector_paused(),
    ):
        for batch in reader.batches():
            try:
                fold.fold(map(Message.value, batch))
            except (ValueError, KeyError, TypeError) as error:
                raise LedgerError(
                    f"{reader.topic} holds a record that is not an event ({error!r}): "
                    "is --topic-prefix right?"
                ) from error
            advance(len(batch))
    return fold, time.perf_counter() - started


@contextmanager
def _collector_paused() -> Iterator[None]:
    # The fold allocates a dict per event that dies at once and makes no reference cycles, yet
    # each few hundred allocations trigger a collection scanning every long-lived object: a
    # quarter of the decoding time, for nothing.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextmanager
def _progress(total: int, shown: bool) -> Iterator[Callable[[int], None]]:
    if not shown:
        yield lambda _count: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (
        TextColumn("replaying"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("replay", total=total, rate="")
        started, done = time.perf_counter(), 0

        def advance(count: int) -> None:
            nonlocal done
            done += count
            rate = done / max(time.perf_counter() - started, 1e-6)
            bar.update(task, completed=done, rate=f"{rate:,.0f} events/s")

        yield advance


def _verify(settings: LedgerSettings, fold: ReplayFold) -> list[Difference]:
    published = {a: b.balance_minor for a, b in _published(settings).items()}
    return differences(fold.balances, published)


def _print_replay(
    fold: ReplayFold, summary: dict[str, Any], mismatches: list[Difference] | None
) -> None:
    until = f" until {summary['until']}" if summary["until"] else ""
    click.echo(
        f"replayed {summary['events']:,} events{until} ({summary['events_with_postings']:,} with "
        f"postings, {summary['repeats_skipped']:,} repeats skipped) in {summary['seconds']:.2f} s: "
        f"{summary['events_per_second']:,} events/s"
    )
    click.echo(
        f"{summary['accounts']:,} accounts; sum of balances {summary['sum_minor']} (must be 0)"
    )
    if mismatches is None:
        _show_balances("", fold.rows())
    elif mismatches:
        table = [[a, str(mine), str(theirs), str(mine - theirs)] for a, mine, theirs in mismatches]
        _table(
            "DIFFERENCES",
            ["account", "replayed", "published", "replayed - published"],
            table,
            {1, 2, 3},
        )
    else:
        click.echo("verified: every account equals ledger.balances")


# ---- export --------------------------------------------------------------------------------------


@click.group("export")
def export_group() -> None:
    """Write the ledger's data to files for analysts."""


@export_group.command("balances")
@click.option(
    "--format",
    "file_format",
    type=click.Choice(["csv", "parquet"]),
    default="csv",
    show_default=True,
    help="File format.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="File to write ('-': standard output, csv only).",
)
@click.pass_obj
def export_balances(settings: LedgerSettings, file_format: str, out: Path) -> None:
    """Write every account's balance to a file.

    From ledger.balances, shards summed, one row per account: account, balance_minor,
    currency, as_of (when its newest balance record was written, UTC)."""
    if file_format == "parquet" and str(out) == "-":
        raise click.UsageError("parquet is binary: give --out a file name")
    balances = list(_published(settings).values())
    if str(out) == "-":
        _write_csv(sys.stdout, balances)
        return
    # Written beside the target and renamed: a half-written export never looks complete.
    partial = out.with_name(out.name + ".partial")
    try:
        if file_format == "csv":
            with partial.open("w", newline="", encoding="utf-8") as handle:
                _write_csv(handle, balances)
        else:
            _write_parquet(partial, balances)
        partial.replace(out)
    except OSError as error:
        raise click.BadParameter(f"cannot write {out}: {error}", param_hint="--out") from error
    click.echo(f"wrote {len(balances)} accounts to {out}", err=True)


def _write_csv(handle: Any, balances: list[PublishedBalance]) -> None:
    import csv

    writer = csv.writer(handle)
    writer.writerow(["account", "balance_minor", "currency", "as_of"])
    for b in balances:
        writer.writerow([b.account, b.balance_minor, b.currency, iso_ms(b.as_of_ms)])


def _write_parquet(path: Path, balances: list[PublishedBalance]) -> None:
    import importlib

    # pyarrow ships no type information: used through Any.
    arrow: Any = importlib.import_module("pyarrow")
    parquet: Any = importlib.import_module("pyarrow.parquet")
    table = arrow.table(
        {
            "account": arrow.array([b.account for b in balances], arrow.string()),
            "balance_minor": arrow.array([b.balance_minor for b in balances], arrow.int64()),
            "currency": arrow.array([b.currency for b in balances], arrow.string()),
            "as_of": arrow.array([b.as_of_ms for b in balances], arrow.timestamp("ms", tz="UTC")),
        }
    )
    parquet.write_table(table, str(path))


COMMANDS: list[click.Command] = [
    balance_command,
    balances_command,
    history_command,
    replay_command,
    export_group,
]
