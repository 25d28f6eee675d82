"""Prometheus metrics of the processors; served on LEDGER_METRICS_PORT when it is not 0."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class Metrics:
    """One registry per process role, so several in one process (tests) do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.commands = Counter(
            "ledger_commands_total", "Commands decided", ["type"], registry=self.registry
        )
        self.outcomes = Counter(
            "ledger_outcomes_total",
            "Outcomes by status and reason",
            ["status", "reason"],
            registry=self.registry,
        )
        self.events = Counter(
            "ledger_events_total", "Events written by the decider", ["type"], registry=self.registry
        )
        self.dead_letters = Counter(
            "ledger_dead_letters_total",
            "Records sent to the DLQ",
            ["source", "error"],
            registry=self.registry,
        )
        self.projected = Counter(
            "ledger_projected_events_total", "Events folded into balances", registry=self.registry
        )
        self.duplicates = Counter(
            "ledger_projector_duplicates_total",
            "Events dropped as already applied",
            registry=self.registry,
        )
        self.gaps = Counter(
            "ledger_projector_gaps_total",
            "Loans the projector stopped at a seq gap (alert)",
            registry=self.registry,
        )
        self.decide_errors = Counter(
            "ledger_decide_errors_total",
            "Decisions that raised: a bug; the command is dead-lettered (alert)",
            registry=self.registry,
        )
        self.quarantined = Counter(
            "ledger_quarantined_loans_total",
            "Loans quarantined by a seq gap or an unreadable event (alert; see docs/operating.md)",
            ["stage", "why"],
            registry=self.registry,
        )
        self.restores = Counter(
            "ledger_restores_total",
            "Restores of a stage's partitions",
            ["stage"],
            registry=self.registry,
        )
        self.restore_records = Counter(
            "ledger_restore_records_total",
            "Records read by restores",
            ["stage"],
            registry=self.registry,
        )
        self.restore_seconds = Gauge(
            "ledger_last_restore_seconds",
            "How long the stage's last restore took",
            ["stage"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "ledger_consumer_lag",
            "Records not yet processed",
            ["topic", "partition"],
            registry=self.registry,
        )

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, addr="127.0.0.1", registry=self.registry)
