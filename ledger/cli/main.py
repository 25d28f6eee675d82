"""The `ledger` command line: the shell around the pure core and the stream processors."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from streams.errors import LedgerError
from streams.settings import LedgerSettings

LOG_LEVELS = {
    "crit": "CRITICAL", "error": "ERROR", "warn": "WARNING", "info": "INFO", "debug": "DEBUG"
}  # fmt: skip


class TroubleError(click.ClickException):
    """Kafka, a channel or a topic is not there: exit 2 with the message saying what to do."""

    exit_code = 2


class LedgerGroup(click.Group):
    """Every command's LedgerError becomes a one-line message and exit 2, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LedgerError as error:
            raise TroubleError(str(error)) from error


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
    context.obj = LedgerSettings(**{k: v for k, v in overrides.items() if v is not None})


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
    type=click.Choice(["worker", "gateway", "client", "analyst"]),
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
    from streams.worker import run_worker

    run_worker(settings)


@cli.command()
@click.pass_obj
def gateway(settings: LedgerSettings) -> None:
    """Call the payment channels for deduction and refund events, report their answers, sweep
    idle work and flag stuck attempts; until stopped (SIGTERM or Ctrl-C)."""
    import logging

    from streams.gateway import run_gateway
    from streams.topics import ensure_topics

    logging.basicConfig(
        level=LOG_LEVELS[settings.log_level],
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
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
    discrepancy to the ledger as a command and print what became of it."""
    from streams.reconcile import run_reconcile, run_scheduled, summary_lines

    if every is not None:
        if channel or business_date:
            raise click.UsageError("--every reconciles all channels: leave out --channel/--date")
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


@cli.group()
def channels() -> None:
    """The payment-channel simulator."""


@channels.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8700, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--seed", default=7, show_default=True, type=int, help="Seed of every channel's fate."
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="JSON SimulatorConfig; default: three channels alpha, beta, gamma.",
)
def channels_serve(host: str, port: int, seed: int, config_path: Path | None) -> None:
    """Serve simulated payment channels over HTTP until stopped."""
    from streams.channels.config import default_config, load_config
    from streams.channels.server import run_server

    config = load_config(config_path) if config_path else default_config(seed)
    click.echo(f"channels {', '.join(config.channels)} on http://{host}:{port}")
    run_server(host, port, config)


def _register_command_groups() -> None:
    # Commands live in modules by audience: senders, operators' inspection, analysts' report.
    from ledger.cli import inspect, report, send

    for module in (send, inspect, report):
        for command in module.COMMANDS:
            cli.add_command(command)


_register_command_groups()


def main() -> None:
    try:
        cli(standalone_mode=True)
    except LedgerError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
