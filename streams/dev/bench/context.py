"""What every benchmark section shares: sizes, the broker, a fresh topic prefix per section."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from streams.dev.bench.kafkaio import delete_prefixed
from streams.settings import LedgerSettings


@dataclass(frozen=True)
class Sizes:
    raw_messages: int  # commands for the baseline and ingest (events: as many as they make)
    base_loans: int  # loans decided for real; byte corpora are copies of them
    replay_events: int
    pipeline_loans: int  # five commands each (decider and projector alone)
    gateway_loans: int  # full cycles through the gateway and the channel simulator
    latency_rates: tuple[int, ...]
    latency_seconds: float
    latency_max_commands: int  # a fast rate runs shorter: commands are decided beforehand
    core_loans: int  # one-year loan states weighed by the core section
    restore_loans: int  # loans in the one partition the restore section restores


FULL = Sizes(
    raw_messages=200_000,
    base_loans=2_000,
    replay_events=1_000_000,
    pipeline_loans=20_000,
    gateway_loans=1_000,
    latency_rates=(100, 1_000, 5_000),
    latency_seconds=20.0,
    latency_max_commands=50_000,
    core_loans=200,
    restore_loans=100_000,
)
QUICK = Sizes(
    raw_messages=20_000,
    base_loans=300,
    replay_events=200_000,
    pipeline_loans=200,
    gateway_loans=100,
    latency_rates=(30, 1_000),
    latency_seconds=5.0,
    latency_max_commands=5_000,
    core_loans=20,
    restore_loans=2_000,
)


@dataclass
class Bench:
    """One run: where Kafka is, its sizes, where logs go, and the topics to clean up."""

    bootstrap: str
    sizes: Sizes
    stamp: str
    workdir: Path
    console: Console
    keep_topics: bool = False
    partitions: int = 8
    prefixes: list[str] = field(default_factory=list)

    def settings(self, section: str, **overrides: Any) -> LedgerSettings:
        """Settings on a fresh topic prefix, e.g. `bench-20260301-093000-baseline.`."""
        prefix = f"bench-{self.stamp}-{section}."
        self.prefixes.append(prefix)
        return LedgerSettings(
            bootstrap_servers=self.bootstrap,
            topic_prefix=prefix,
            partitions=self.partitions,
            **overrides,
        )

    @contextmanager
    def section(self, section: str, **overrides: Any) -> Iterator[LedgerSettings]:
        """Fresh settings for the block; its topics are deleted after it (unless kept)."""
        settings = self.settings(section, **overrides)
        try:
            yield settings
        finally:
            if not self.keep_topics:
                delete_prefixed(settings, settings.topic_prefix)

    def logs(self, name: str) -> Path:
        folder = self.workdir / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def machine(kafka_version: str) -> dict[str, Any]:
    """What the figures were measured on."""
    import confluent_kafka

    return {
        "nproc": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "load_average_at_start": [round(n, 2) for n in os.getloadavg()],
        "cpu": _cpu_model(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "java": _java_version(),
        "kafka": kafka_version,
        "librdkafka": confluent_kafka.libversion()[0],
        "confluent_kafka": confluent_kafka.__version__,
    }


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _java_version() -> str:
    try:
        answer = subprocess.run(
            ["java", "-version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    lines = (answer.stderr or answer.stdout).splitlines()
    return lines[0] if lines else "unknown"
