"""Run the processors in this process (`ledger worker`) until SIGTERM or Ctrl-C."""

from __future__ import annotations

import sys

from streams.app import make_app
from streams.metrics import Metrics
from streams.settings import LedgerSettings
from streams.topics import ensure_topics


def run_worker(settings: LedgerSettings) -> None:
    """Create missing topics, then run the faust worker; returns only when it stops."""
    ensure_topics(settings)
    metrics = Metrics()
    metrics.serve(settings.metrics_port)
    app = make_app(settings, metrics)
    # faust's worker reads its own command line; give it one instead of ours.
    sys.argv = ["ledger worker", "worker", "--loglevel", settings.log_level, "--without-web"]
    app.main()
