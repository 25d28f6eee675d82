"""The topic registry of docs/design.md: names, keys, value types and broker configs."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

DAY_MS = 24 * 3600 * 1000


class CleanupPolicy(StrEnum):
    DELETE = "delete"
    COMPACT = "compact"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic of the contract. `name` is the base name; a deployment prefix goes in front."""

    name: str
    key: str
    value: str
    written_by: str
    retention_ms: int
    cleanup_policy: CleanupPolicy = CleanupPolicy.DELETE
    # Commands, events and outcomes share a partition count so a loan's records line up.
    copartitioned: bool = True
    extra_configs: dict[str, str] = field(default_factory=dict)

    def full_name(self, prefix: str = "") -> str:
        return f"{prefix}{self.name}"

    def configs(self) -> dict[str, str]:
        return {
            "cleanup.policy": str(self.cleanup_policy),
            "retention.ms": str(self.retention_ms),
            **self.extra_configs,
        }


COMMANDS = TopicSpec(
    "ledger.commands", "loan_id", "Command", "upstream, scheduler, gateway, CLI", 7 * DAY_MS
)
EVENTS = TopicSpec("ledger.events", "loan_id", "Event", "decider only", -1)
OUTCOMES = TopicSpec("ledger.outcomes", "loan_id", "Outcome", "decider", 7 * DAY_MS)
BALANCES = TopicSpec(
    "ledger.balances", "account", "BalanceRecord", "projector", -1,
    cleanup_policy=CleanupPolicy.COMPACT, copartitioned=False,
    # Compact promptly so a reader that starts from the beginning reads little more than one
    # record per account.
    extra_configs={"min.cleanable.dirty.ratio": "0.1", "segment.ms": str(3600 * 1000)},
)  # fmt: skip
LOAN_STATES = TopicSpec(
    "ledger.loan-states", "loan_id", "LoanSnapshot", "decider only", -1,
    cleanup_policy=CleanupPolicy.COMPACT,
    # A restore reads the whole partition: compact promptly so it holds little more than one
    # snapshot per loan (the decider writes one per loan per batch that touched it).
    extra_configs={"min.cleanable.dirty.ratio": "0.1", "segment.ms": str(3600 * 1000)},
)  # fmt: skip
PROJECTOR_STATES = TopicSpec(
    "ledger.projector-states", "loan_id", "LoanBooks", "projector only", -1,
    cleanup_policy=CleanupPolicy.COMPACT,
    # As the loan states: a restore reads the whole partition.
    extra_configs={"min.cleanable.dirty.ratio": "0.1", "segment.ms": str(3600 * 1000)},
)  # fmt: skip
DLQ = TopicSpec(
    "ledger.dlq",
    "original key",
    "original bytes",
    "any processor",
    30 * DAY_MS,
    copartitioned=False,
)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    COMMANDS, EVENTS, OUTCOMES, BALANCES, LOAN_STATES, PROJECTOR_STATES, DLQ,
)  # fmt: skip
