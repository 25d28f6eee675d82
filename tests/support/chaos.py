"""What the chaos run needs besides the saga harness: who coordinates what (to kill it on
purpose), consumer lag read from the brokers, and the cards checked against the simulator's
ground truth: no group of installments charged more than it owed."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from streams.dev.channels.simulator import GroundTruth

TRANSACTION_STATE = "__transaction_state"
CONSUMER_OFFSETS = "__consumer_offsets"
# librdkafka ends an admin request itself before we stop waiting for it: giving up first would
# drop the AdminClient with the request still queued (see `coordinator` for the abort this
# machinery once caused).
ADMIN_TIMEOUT_S = 20
RESULT_WAIT_S = 60


def java_string_hash(text: str) -> int:
    """Java's String.hashCode (over UTF-16 code units, 32-bit wrap-around), which Kafka uses to
    place a transactional id on a partition of __transaction_state."""
    value = 0
    for unit in text.encode("utf-16-be").hex(" ", 2).split():
        value = (31 * value + int(unit, 16)) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def coordinator_partition(key: str, partitions: int) -> int:
    """Where Kafka keeps a transactional id (TransactionStateManager.partitionFor) or a group
    (GroupCoordinatorService.topicPartitionFor): Utils.abs(hashCode) % partitions, where
    Utils.abs is Math.abs except that Integer.MIN_VALUE gives 0 (not the sign bit masked: that
    put half of all ids on the wrong partition, and the chaos run aimed at the wrong broker)."""
    value = java_string_hash(key)
    return (0 if value == -(2**31) else abs(value)) % partitions


def coordinator(admin: AdminClient, internal_topic: str, key: str) -> int:
    """The broker coordinating `key`: the leader of its partition of `internal_topic`
    (__transaction_state for a transactional id, __consumer_offsets for a group).

    From metadata, not `describe_consumer_groups`: a test process that asked that aborted
    inside librdkafka 2.16 three times (`rd_kafka_enq_once_del_source_return: Assertion
    'eonce->refcnt > 0'`; no issue thread found), twice with brokers being killed and once on a
    whole, just-formed cluster. The metadata this reads never did."""
    topic = admin.list_topics(internal_topic, timeout=30).topics[internal_topic]
    partition = coordinator_partition(key, len(topic.partitions))
    leader: int = topic.partitions[partition].leader
    return leader


def consumer_lag(config: dict[str, Any], groups: tuple[str, ...]) -> dict[str, int]:
    """Per group, the records between its committed offsets and the last stable offsets of the
    partitions it committed. A transactional input ends with a commit marker that no consumer
    ever receives, so a group that read everything commits one short of the end: such short
    gaps are counted record by record."""
    admin = AdminClient(config)
    lag: dict[str, int] = {}
    for group in groups:
        asked = [ConsumerGroupTopicPartitions(group)]
        offsets = admin.list_consumer_group_offsets(asked, request_timeout=ADMIN_TIMEOUT_S)
        [future] = offsets.values()
        committed = [tp for tp in future.result(RESULT_WAIT_S).topic_partitions if tp.offset >= 0]
        if not committed:
            lag[group] = -1  # nothing committed yet: not caught up
            continue
        ends = last_offsets(admin, committed, IsolationLevel.READ_COMMITTED)
        gaps = [(tp, ends[(tp.topic, tp.partition)] - tp.offset) for tp in committed]
        lag[group] = sum(
            _records_between(config, tp, tp.offset + gap) if 0 < gap <= 10 else max(0, gap)
            for tp, gap in gaps
        )
    return lag


def _records_between(config: dict[str, Any], start: TopicPartition, end: int) -> int:
    """The records a read_committed consumer gets from `start` up to offset `end`."""
    reader = Consumer(
        config
        | {
            "group.id": "chaos-lag-probe",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    reader.assign([TopicPartition(start.topic, start.partition, start.offset)])
    found, deadline = 0, time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            message = reader.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:  # end of the partition
                return found
            offset = message.offset()
            if offset is not None and offset < end:
                found += 1
        return found
    finally:
        reader.close()


def last_offsets(
    admin: AdminClient, partitions: list[TopicPartition], level: IsolationLevel
) -> dict[tuple[str, int], int]:
    """End offset per partition: the last stable offset (READ_COMMITTED) or the high watermark."""
    asked = {
        TopicPartition(tp.topic, tp.partition): OffsetSpec.latest()  # type: ignore[no-untyped-call]
        for tp in partitions
    }
    found = admin.list_offsets(asked, isolation_level=level, request_timeout=ADMIN_TIMEOUT_S)
    return {(tp.topic, tp.partition): f.result(RESULT_WAIT_S).offset for tp, f in found.items()}


def installments_overcharged(
    truth: GroundTruth, events_by_loan: dict[str, list[dict[str, Any]]]
) -> list[tuple[str, tuple[int, ...]]]:
    """(loan, installments) for which the orders naming only those installments kept more of the
    borrower's money than the installments ever owed (schedule plus late fees): a borrower
    debited twice for the same money. What an order kept is what the simulator really charged,
    whatever the ledger was told, less the refunds the ledger made of it.

    Two orders may rightly both pay one installment: a late fee assessed while the first was in
    flight leaves a remainder the next due date's debit pays. Only money beyond what a group of
    installments owed is a double debit, so every union of the orders' installments is checked."""
    found = []
    for loan, events in events_by_loan.items():
        owed = _owed_by_installment(events)
        kept = _kept_by_order(truth, events)
        for group in _unions(named for named, _ in kept):
            taken = sum(amount for named, amount in kept if named <= group)
            if taken > sum(owed[number] for number in group):
                found.append((loan, tuple(sorted(group))))
                break
    return sorted(found)


def _owed_by_installment(events: list[dict[str, Any]]) -> Counter[int]:
    owed: Counter[int] = Counter()
    for event in events:
        if event["type"] == "LoanOpened":
            for row in event["schedule"]:
                owed[row["number"]] += row["principal_minor"] + row["interest_minor"]
                owed[row["number"]] += row["fee_minor"]
        if event["type"] == "LateFeeAssessed":
            owed[event["installment"]] += event["amount_minor"]
    return owed


def _kept_by_order(
    truth: GroundTruth, events: list[dict[str, Any]]
) -> list[tuple[frozenset[int], int]]:
    refunded = _refunded_by_order(events)
    kept = []
    for event in events:
        if event["type"] == "DeductionStarted":
            order = truth.orders.get(event["order_id"])
            charged = event["amount_minor"] * (order.charges if order is not None else 0)
            if charged - refunded[event["order_id"]] > 0:
                kept.append(
                    (frozenset(event["installments"]), charged - refunded[event["order_id"]])
                )
    return kept


def _unions(sets: Iterable[frozenset[int]]) -> set[frozenset[int]]:
    """Every union of one or more of `sets` (a loan has a handful of orders that kept money)."""
    unions: set[frozenset[int]] = set()
    for named in sets:
        unions |= {union | named for union in unions} | {named}
    return unions


def _refunded_by_order(events: list[dict[str, Any]]) -> Counter[str]:
    started = {e["refund_id"]: e for e in events if e["type"] == "RefundStarted"}
    refunded: Counter[str] = Counter()
    for event in events:
        if event["type"] == "RefundSucceeded":
            refund = started[event["refund_id"]]
            refunded[refund["order_id"]] += refund["amount_minor"]
    return refunded


RESTORE_LINE = re.compile(r"(decider|projector): took partition \d+ in ([0-9.]+) s \((\d+) records")


def restores_logged(logs: Iterable[Path]) -> str:
    """Each stage's restores, as the workers logged them: how many, the longest, records read."""
    found: dict[str, list[tuple[float, int]]] = {}
    for path in logs:
        for match in RESTORE_LINE.finditer(path.read_text(errors="replace")):
            found.setdefault(match[1], []).append((float(match[2]), int(match[3])))
    parts = []
    for stage, restores in sorted(found.items()):
        seconds = [s for s, _ in restores]
        records = sorted(r for _, r in restores)
        parts.append(
            f"{stage} {len(restores)}, longest {max(seconds):.1f} s, records read median "
            f"{records[len(records) // 2]:,} max {records[-1]:,}"
        )
    return "; ".join(parts) or "none logged"
