"""The `ledger` command line: the shell around the pure core and the stream processors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from streams.errors import LedgerError
from streams.settings import LedgerSettings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
@click.pass_obj
def worker(settings: LedgerSettings) -> None:
    """Run the decider and the projector until stopped (SIGTERM or Ctrl-C)."""
    from streams.worker import run_worker

    run_worker(settings)


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


def main() -> None:
    try:
        cli(standalone_mode=True)
    except LedgerError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
