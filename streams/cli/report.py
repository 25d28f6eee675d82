"""The analysts' command: `ledger report`, a static HTML page drawn from the whole event log."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from streams.errors import LedgerError
from streams.settings import LedgerSettings


@click.command("report")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write index.html into (created if missing).",
)
@click.option("--title", default="Loan repayments", show_default=True, help="The page's title.")
@click.pass_context
def report(context: click.Context, out_dir: Path, title: str) -> None:
    """Write OUT/index.html: collections, receivables, outcomes and settlement times as charts,
    self-contained (inline SVG and CSS, no script, nothing fetched), from `ledger.events`."""
    # Imported here: matplotlib is slow to load and only this command needs it.
    from streams.report.page import write_report

    settings: LedgerSettings = context.obj
    try:
        path = write_report(settings, out_dir, title, datetime.now(UTC))
    except LedgerError as error:
        # Handled here too, so the exit status is 2 however the group is invoked.
        click.echo(f"error: {error}", err=True)
        context.exit(2)
    click.echo(str(path))


COMMANDS: list[click.Command] = [report]
