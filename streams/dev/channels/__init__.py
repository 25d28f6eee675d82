"""A payment-channel simulator (development tooling): debits that fail, time out, get lost,
reverse and repeat. The product never imports it; the channel wire is `schemas.channel`."""

from __future__ import annotations

import sys
from pathlib import Path


def simulator_command(port: int, config: Path | None = None) -> list[str]:
    """The command line that serves the simulated channels on 127.0.0.1:`port`."""
    command = [sys.executable, "-m", "streams.dev.channels.server", "--port", str(port)]
    return command + (["--config", str(config)] if config is not None else [])
