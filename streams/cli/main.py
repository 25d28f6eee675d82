"""The `ledger` command line: the shell around the pure core and the stream processors."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NoReturn

import click
from pydantic import ValidationError

from streams.acls import COMPONENTS
from streams.errors import LedgerError
from streams.settings import LedgerSettings


class LedgerGroup(click.Group):
    """The one mapping from errors to exit codes (streams/errors.py): every command's
    LedgerError, and a LEDGER_* variable that does not parse, become a one-line message and
    the error's exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LedgerError as error:
            _exit(ctx, error)


def _exit(ctx: click.Context, error: LedgerError) -> NoReturn:
    click.echo(f"{error.label}{error}", err=True)
    ctx.exit(error.exit_code)


def _describe_settings(error: ValidationError) -> str:
    first = error.errors()[0]
    name = "LEDGER_" + "_".join(str(part) for part in first["loc"]).upper()
    return f"{name}: {first['msg']} (got {first.get('input')!r}); fix the variable and run again"


@click.group(cls=LedgerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--bootstrap-servers",
    envvar="LEDGER_BOOTSTRAP_SERVERS",
    default=None,
    help="Kafka bootstrap list.",
)
@click.option(
    "--topic-prefix", envvar="LEDGER_TOPIC_PREFIX", default=None, help="Prefix of every topic."
)
@click.pass_context
def cli(context: click.Context, bootstrap_servers: str | None, topic_prefix: str | None) -> None:
    """An event-sourced loan-repayment ledger on Kafka. Settings come from LEDGER_* variables."""
    import logging

    # librdkafka retries a missing broker and logs each attempt; our errors say it in one line.
    logging.getLogger("librdkafka").setLevel(logging.CRITICAL)
    overrides: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers,
        "topic_prefix": topic_prefix,
    }
    try:
        context.obj = LedgerSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as error:
        raise LedgerError(_describe_settings(error)) from error


@cli.group()
def topics() -> None:
    """Manage the contract's topics."""


@topics.command("create")
@click.pass_obj
def topics_create(settings: LedgerSettings) -> None:
    """Create the missing topics with their contract configs (idempotent)."""
    from streams.topics import ensure_topics

    created = ensure_topics(settings)
    click.echo(f"created: {', '.join(created)}" if created else "all topics already exist")


@cli.command()
@click.option(
    "--component",
    type=click.Choice(COMPONENTS),
    required=True,
    help="Which process the principal runs.",
)
@click.option("--principal", required=True, help="Kafka principal, e.g. User:ledger-worker.")
@click.option("--apply", "apply_", is_flag=True, help="Create them (needs ALTER on the cluster).")
@click.pass_obj
def acls(settings: LedgerSettings, component: str, principal: str, apply_: bool) -> None:
    """The least-privilege ACLs of one component; print them, or create them with --apply."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from streams.acls import bindings, grants

    for grant in grants(settings, component):  # type: ignore[arg-type]  # click checked it
        click.echo(f"{principal}  {grant.row()}")
    if not apply_:
        return
    admin = AdminClient(settings.confluent_config())
    try:
        for future in admin.create_acls(bindings(settings, component, principal)).values():  # type: ignore[arg-type]
            future.result(timeout=30)
    except KafkaException as error:
        raise LedgerError(f"creating the ACLs failed: {error.args[0].str()}") from error
    click.echo("created")


@cli.command()
@click.pass_obj
def worker(settings: LedgerSettings) -> None:
    """Run the decider and the projector until stopped (SIGTERM or Ctrl-C)."""
    from streams.logs import configure_logging
    from streams.worker.main import run_worker

    configure_logging(settings)
    run_worker(settings)


@cli.command()
@click.pass_obj
def gateway(settings: LedgerSettings) -> None:
    """Call the payment channels for deduction and refund events, report their answers, sweep
    idle work and flag stuck attempts; until stopped (SIGTERM or Ctrl-C).

    The channels are reached at LEDGER_CHANNELS_URL (default http://127.0.0.1:8700)."""
    from streams.gateway.service import run_gateway
    from streams.logs import configure_logging
    from streams.topics import ensure_topics

    configure_logging(settings)
    ensure_topics(settings)
    run_gateway(settings)


@cli.command("reconcile")
@click.option("--channel", help="The channel whose statement to check.")
@click.option(
    "--date",
    "business_date",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="The statement's business date, YYYY-MM-DD.",
)
@click.option(
    "--every",
    type=click.FloatRange(min=1),
    help="Instead: reconcile every routed channel over the last few business days, every so "
    "many seconds, until stopped (the scheduled run).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--wait", default=60.0, show_default=True, help="Seconds to wait for the findings' outcomes."
)
@click.pass_obj
def reconcile_command(
    settings: LedgerSettings,
    channel: str | None,
    business_date: datetime | None,
    every: float | None,
    as_json: bool,
    wait: float,
) -> None:
    """Match a channel's statement (with the days either side) against the books; send every
    discrepancy to the ledger as a command and print what became of it.

    The statements come from the channels' HTTP API at LEDGER_CHANNELS_URL (default
    http://127.0.0.1:8700, the channel simulator in development)."""
    from streams.reconcile.run import run_reconcile, run_scheduled, summary_lines

    if every is not None:
        if channel or business_date:
            raise click.UsageError("--every reconciles all channels: leave out --channel/--date")
        from streams.logs import configure_logging

        configure_logging(settings)
        run_scheduled(settings, every)
        return
    if channel is None or business_date is None:
        raise click.UsageError("give --channel and --date (or --every for the scheduled run)")
    report = run_reconcile(settings, channel, business_date.date(), wait)
    if as_json:
        click.echo(report.as_json())
    else:
        for line in summary_lines(report):
            click.echo(line)


def _register_command_groups() -> None:
    # Commands live in modules by audience: senders, operators' inspection, analysts' report.
    from streams.cli import inspect, report, send

    for module in (send, inspect, report):
        for command in module.COMMANDS:
            cli.add_command(command)


_register_command_groups()


def main() -> None:
    cli(standalone_mode=True)


if __name__ == "__main__":
    main()
