"""The README's first command, shortened: the demo runs its checks, then `ledger replay --verify`
passes on what it left, and `--until` a mid-demo moment gives the balances of that moment."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

pytestmark = pytest.mark.integration
MIDWAY = "2026-03-06:"  # the line the demo prints when its fifth business day is done


def test_the_demo_passes_its_checks_and_replays_to_its_balances(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    lines, midway_ms = run_demo(kafka_bootstrap, tmp_path)
    output = "\n".join(lines)
    assert "FAIL" not in output
    assert output.count("PASS") >= 3, output
    prefix = re.search(r"topic prefix (\S+)", output)
    assert prefix is not None, output
    assert (tmp_path / "report" / "index.html").exists()

    verify = ledger(kafka_bootstrap, prefix[1], "replay", "--verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr

    until = datetime.fromtimestamp(midway_ms / 1000, UTC).isoformat()
    replayed = ledger(kafka_bootstrap, prefix[1], "replay", "--until", until, "--json")
    assert replayed.returncode == 0, replayed.stderr
    balances = {
        row["account"]: row["balance_minor"]
        for row in json.loads(replayed.stdout)["balances"]
        if row["balance_minor"] != 0
    }
    expected = fold_until(kafka_bootstrap, prefix[1] + "ledger.events", midway_ms)
    assert balances == expected
    assert expected != fold_until(kafka_bootstrap, prefix[1] + "ledger.events", 2**62)


def run_demo(bootstrap: str, workdir: Path) -> tuple[list[str], int]:
    """Run `python -m streams.dev.demo` on a shortened scenario; note when it passed midway."""
    command = [sys.executable, "-m", "streams.dev.demo", "--loans", "12", "--days", "8"]
    command += ["--report", str(workdir / "report")]
    environment = os.environ | {"KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    lines: list[str] = []
    midway_ms = 0
    for line in process.stdout:
        lines.append(line.rstrip())
        if line.startswith(MIDWAY):
            midway_ms = int(time.time() * 1000)
    assert process.wait(timeout=600) == 0, "\n".join(lines)
    assert midway_ms, "\n".join(lines)
    return lines, midway_ms


def ledger(bootstrap: str, prefix: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "streams.cli.main", "--bootstrap-servers", bootstrap]
    command += ["--topic-prefix", prefix, *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def fold_until(bootstrap: str, topic: str, until_ms: int) -> dict[str, int]:
    """An independent fold (json only) of the events whose Kafka timestamp is <= `until_ms`."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"demo-check-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p))[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        balances: dict[str, int] = defaultdict(int)
        seen: set[tuple[str, int]] = set()
        read = dict.fromkeys(partitions, 0)
        while any(read[p] < ends[p] for p in partitions):
            batch = consumer.consume(1000, timeout=2)
            if not batch:
                break
            for message in batch:
                partition, offset, value = message.partition(), message.offset(), message.value()
                if message.error() or partition is None or offset is None or value is None:
                    continue
                read[partition] = offset + 1
                event = json.loads(value)
                slot = (event["loan_id"], event["seq"])
                if message.timestamp()[1] > until_ms or slot in seen:
                    continue
                seen.add(slot)
                for posting in event["postings"]:
                    balances[posting["debit"]] += posting["amount_minor"]
                    balances[posting["credit"]] -= posting["amount_minor"]
        return {account: amount for account, amount in balances.items() if amount != 0}
    finally:
        consumer.close()
