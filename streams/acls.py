"""Least-privilege ACLs per component (docs/security.md): what each principal may do, no more.

`ledger acls --component C --principal User:NAME [--apply]` prints them, or creates them
through the admin API (as a principal allowed to alter ACLs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from schemas.topics import (
    ALL_TOPICS,
    BALANCES,
    COMMANDS,
    DLQ,
    EVENTS,
    LOAN_STATES,
    OUTCOMES,
    PROJECTOR_STATES,
)
from streams.settings import LedgerSettings

Component = Literal["worker", "gateway", "reconciler", "client", "analyst"]
COMPONENTS: tuple[Component, ...] = ("worker", "gateway", "reconciler", "client", "analyst")
READ = (AclOperation.READ, AclOperation.DESCRIBE)
WRITE = (AclOperation.WRITE, AclOperation.DESCRIBE)


@dataclass(frozen=True)
class Grant:
    resource: ResourceType
    name: str
    pattern: ResourcePatternType
    operations: tuple[AclOperation, ...]

    def row(self) -> str:
        operations = ", ".join(op.name for op in self.operations)
        kind = "prefix" if self.pattern is ResourcePatternType.PREFIXED else "name"
        return f"{self.resource.name.lower():16} {kind:6} {self.name:48} {operations}"


def grants(settings: LedgerSettings, component: Component) -> list[Grant]:
    topic, group = settings.topic, settings.group_id

    def topics(operations: tuple[AclOperation, ...], *names: str) -> list[Grant]:
        return [
            Grant(ResourceType.TOPIC, topic(name), ResourcePatternType.LITERAL, operations)
            for name in names
        ]

    def literal(resource: ResourceType, name: str) -> Grant:
        return Grant(resource, name, ResourcePatternType.LITERAL, (AclOperation.READ,))

    # The worker and the gateway run `ensure_topics` at start: they must see that no topic of the
    # set is missing (they would try to create it, which they may not).
    describe_all = topics(
        (AclOperation.DESCRIBE,),
        *(spec.name for spec in ALL_TOPICS),
    )
    if component == "worker":
        read_write = (AclOperation.READ, AclOperation.WRITE)
        return [
            *describe_all,
            *topics((AclOperation.READ,), COMMANDS.name),
            *topics(read_write, EVENTS.name, LOAN_STATES.name, PROJECTOR_STATES.name),
            *topics((AclOperation.WRITE,), OUTCOMES.name, BALANCES.name, DLQ.name),
            *(literal(ResourceType.GROUP, name) for name in settings.worker_groups),
            # Each stage's transactional ids are `{group}-decider-…` and `{group}-projector-…`.
            *(_transactional_ids(f"{group}-{role}-") for role in ("decider", "projector")),
        ]
    if component == "gateway":
        return [
            *describe_all,
            *topics((AclOperation.READ,), EVENTS.name),
            *topics((AclOperation.WRITE,), COMMANDS.name),
            literal(ResourceType.GROUP, f"{group}-gateway"),
        ]
    if component == "reconciler":  # `ledger reconcile`: folds the events, sends findings
        reads = (EVENTS.name, OUTCOMES.name, LOAN_STATES.name)  # loan-states: the clocks
        return [*topics(READ, *reads), *topics(WRITE, COMMANDS.name)]
    if component == "client":
        return [*topics(WRITE, COMMANDS.name), *topics(READ, OUTCOMES.name)]
    return topics(READ, EVENTS.name, BALANCES.name, OUTCOMES.name)  # analyst: the CLI's readers


def _transactional_ids(prefix: str) -> Grant:
    return Grant(ResourceType.TRANSACTIONAL_ID, prefix, ResourcePatternType.PREFIXED, WRITE)


def bindings(settings: LedgerSettings, component: Component, principal: str) -> list[AclBinding]:
    return [
        AclBinding(
            grant.resource,
            grant.name,
            grant.pattern,
            principal,
            "*",
            operation,
            AclPermissionType.ALLOW,
        )
        for grant in grants(settings, component)
        for operation in grant.operations
    ]
