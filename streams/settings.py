"""One frozen settings object for every process, read from `LEDGER_*` environment variables."""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from ledger.policy import Policy


class KafkaSettings(BaseModel):
    """The cluster, the topics' names and shape, and how every client connects to it."""

    bootstrap_servers: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap list")
    topic_prefix: str = Field(default="", description="prefix for every topic and the group id")
    app_id: str = Field(default="ledger", description="consumer group and transactional-id prefix")
    partitions: int = Field(default=8, ge=1, le=1024, description="for the co-partitioned topics")
    replication_factor: int = Field(default=1, ge=1)
    max_message_bytes: int = Field(
        default=64 * 1024, ge=1024, description="larger commands are dead-lettered"
    )
    # Security, passed to every client (confluent-kafka, and aiokafka in the gateway).
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None


class ProcessSettings(BaseModel):
    """How a worker process runs: its guarantee, its identity, its limits, what it reports."""

    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    session_timeout_s: float = Field(
        default=45.0, ge=6, le=300, description="a worker silent this long leaves its group"
    )
    instance_id: str = Field(
        default_factory=socket.gethostname,
        description="names this worker's transactional ids: unique per worker process",
    )
    shutdown_grace_s: float = Field(
        default=20.0, gt=0, description="a graceful stop is ended after this"
    )
    metrics_port: int = Field(default=0, ge=0, le=65535, description="Prometheus port; 0 = off")
    snapshot_interval_s: float = Field(
        default=0.0,
        ge=0,
        le=300,
        description="the decider writes its loan snapshots at most this often (0: every batch)",
    )
    log_level: Literal["crit", "error", "warn", "info", "debug"] = "warn"


class GatewaySettings(BaseModel):
    """The payment channels and how the gateway and the reconciler call them."""

    channels_url: str = Field(
        default="http://127.0.0.1:8700", description="base URL of the payment channels' HTTP API"
    )
    channel_call_timeout_s: float = Field(
        default=5.0, gt=0, description="a channel call unanswered this long is 'outcome unknown'"
    )
    gateway_concurrency: int = Field(
        default=64, ge=1, description="channel calls the gateway has in flight at most"
    )
    poll_initial_s: float = Field(default=0.2, gt=0, description="first wait before a poll")
    poll_max_s: float = Field(default=30.0, gt=0, description="longest wait between two polls")
    sweep_interval_s: float = Field(
        default=180.0, gt=0, description="how often the sweeper and the stuck check run"
    )
    takeover_age_s: float = Field(
        default=180.0, gt=0, description="open work idle this long is resumed by the sweeper"
    )
    stuck_alert_age_s: float = Field(
        default=3600.0, gt=0, description="an attempt in flight this long raises the stuck alert"
    )


class PolicySettings(BaseModel):
    """The business policy the decider applies (`ledger.policy.Policy`)."""

    channels: tuple[str, ...] = ("alpha", "beta")
    grace_days: int = Field(default=3, ge=0)
    late_fee_bps: int = Field(default=500, ge=0)
    late_fee_min_minor: int = Field(default=1_000, ge=0)
    auto_debit: bool = True
    max_days_ahead: int = Field(default=31, ge=1)


class LedgerSettings(KafkaSettings, ProcessSettings, GatewaySettings, PolicySettings, BaseSettings):
    """Built once in the shell (`LedgerSettings()`), then passed down; never a module global.

    Its fields are defined in the four groups above; each is read from `LEDGER_{FIELD}` (the
    table is docs/operating.md), and keyword arguments of the same names override them."""

    model_config = SettingsConfigDict(env_prefix="LEDGER_", frozen=True, extra="ignore")

    def topic(self, base_name: str) -> str:
        return f"{self.topic_prefix}{base_name}"

    @property
    def group_id(self) -> str:
        return f"{self.topic_prefix}{self.app_id}"

    @property
    def worker_groups(self) -> tuple[str, ...]:
        """The consumer groups `ledger worker` processes join, one per stage. ("batched" stays
        in the names so that existing deployments keep their committed offsets.)"""
        return tuple(f"{self.group_id}-batched-{role}" for role in ("decider", "projector"))

    def policy(self) -> Policy:
        return Policy(
            channels=self.channels,
            grace_days=self.grace_days,
            late_fee_bps=self.late_fee_bps,
            late_fee_min_minor=self.late_fee_min_minor,
            auto_debit=self.auto_debit,
            max_days_ahead=self.max_days_ahead,
        )

    def confluent_config(self) -> dict[str, Any]:
        """Connection and security settings for any confluent-kafka client."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            # Through Python logging, so a command line can keep retries off the terminal and
            # say in one line what is wrong instead.
            "logger": logging.getLogger("librdkafka"),
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username or ""
            config["sasl.password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else ""
            )
        if self.ssl_cafile:
            config["ssl.ca.location"] = self.ssl_cafile
        return config

    def aiokafka_config(self) -> dict[str, Any]:
        """Connection and security settings for an aiokafka consumer or producer."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            config["sasl_mechanism"] = self.sasl_mechanism
            config["sasl_plain_username"] = self.sasl_username or ""
            config["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else ""
            )
        if self.security_protocol in ("SSL", "SASL_SSL"):
            config["ssl_context"] = ssl.create_default_context(cafile=self.ssl_cafile)
        return config

    def producer_config(self) -> dict[str, Any]:
        """An idempotent producer whose partitioner matches Kafka's Java clients and aiokafka's."""
        return self.confluent_config() | {
            # librdkafka defaults to a CRC32 partitioner; every other client (Java, aiokafka)
            # hashes keys with murmur2. One loan must land on one partition whatever
            # client sent its command, or two deciders would own it.
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.max.bytes": max(self.max_message_bytes * 4, 1_000_000),
        }
