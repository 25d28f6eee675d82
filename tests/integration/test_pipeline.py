"""The decider and projector on a real broker, under both processing guarantees.

Every test checks the same things at the end (`assert_converged`): each command has exactly one
outcome (byte-identical repeats only after a crash), the log holds exactly the oracle's events
with no seq gap and no conflicting repeat, and the balances topic equals an independent fold of
the raw log.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from schemas.commands import Command
from streams.dev.localkafka import free_port
from streams.topics import ensure_topics
from tests.integration.pipeline import LogFold, Pipeline
from tests.support.oracle import oracle_events
from tests.support.workload import repayment_cycle

pytestmark = pytest.mark.integration


@pytest.fixture(params=["at_least_once", "exactly_once"])
def pipeline(
    request: pytest.FixtureRequest, kafka_bootstrap: str, tmp_path: Path
) -> Iterator[Pipeline]:
    line = Pipeline(kafka_bootstrap, request.param, tmp_path)
    ensure_topics(line.settings)
    try:
        yield line
    finally:
        line.stop()


def assert_converged(
    pipeline: Pipeline, commands: list[Command], *, crashed: bool = False
) -> LogFold:
    outcomes = pipeline.wait_for_outcomes({c.command_id for c in commands})
    assert all(len(set(copies)) == 1 for copies in outcomes.values()), "two different outcomes"
    if not crashed:
        assert all(len(copies) == 1 for copies in outcomes.values()), "an outcome was repeated"
    fold = LogFold().fold(pipeline.read("ledger.events"))
    assert fold.conflicting_repeats == []
    assert fold.seq_gaps() == []
    if not crashed:
        assert fold.repeated_identical == 0
    assert fold.by_seq == oracle_events(commands), "the log differs from the oracle's events"
    expected = dict(fold.balances)
    assert sum(expected.values()) == 0
    assert pipeline.wait_for_balances(expected) == expected, pipeline.log_tail()
    return fold


def statuses(pipeline: Pipeline) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _key, value, _p, _o in pipeline.read("ledger.outcomes"):
        assert value is not None
        outcome = json.loads(value)
        label = outcome["reason"] or outcome["status"]
        counts[label] = counts.get(label, 0) + 1
    return counts


def test_a_thousand_loans_and_five_thousand_commands_balance(pipeline: Pipeline) -> None:
    commands = repayment_cycle(loans=1000)
    assert len(commands) == 5000
    pipeline.start_worker()

    pipeline.send(commands)

    assert_converged(pipeline, commands)
    assert statuses(pipeline) == {"accepted": 4000, "deduction_in_progress": 1000}
    # LEDGER_LOG_LEVEL=info reaches the worker: its restores are logged (the default is warn).
    log = (pipeline.workdir / "w1.log").read_text(errors="replace")
    assert "decider: took partition " in log
    assert "projector: took partition " in log


def test_worker_killed_five_times_while_commands_flow(pipeline: Pipeline) -> None:
    commands = repayment_cycle(loans=400, seed=11)
    rng = random.Random(2026)
    # A killed member keeps its partitions until its session times out: 10 s, not the default
    # 45 s that made this test wait most of its 100 s for the last killed one.
    session = {"session_timeout_s": "10"}
    pipeline.start_worker(**session)
    sender = threading.Thread(target=pipeline.send_over, args=(commands, 8.0))
    sender.start()
    for _ in range(5):
        time.sleep(rng.uniform(0.5, 2.5))
        pipeline.signal_worker("w1", signal.SIGKILL)
        pipeline.start_worker(**session)
    sender.join()

    assert_converged(pipeline, commands, crashed=True)


def test_no_record_skipped_when_a_worker_leaves(pipeline: Pipeline) -> None:
    """Two workers share the partitions; one leaves and the other takes over: every record is
    decided, none twice into different bytes (the faust engine skipped records here,
    faust-streaming#216/#221, which is one reason it left the money path)."""
    commands = repayment_cycle(loans=300, seed=13)
    half = len(commands) // 2
    pipeline.start_worker("w1")
    pipeline.start_worker("w2")
    pipeline.supervise()
    pipeline.send(commands[:half])
    pipeline.wait_for_outcomes({c.command_id for c in commands[:half]})

    pipeline.signal_worker("w2", signal.SIGTERM, for_good=True)
    pipeline.send(commands[half:])

    # A worker that exits is restarted as a supervisor would. A rebalance may redeliver:
    # repeats must be byte-identical, and the log and the books come out the same either way.
    assert_converged(pipeline, commands, crashed=True)
    print(f"worker restarts by the supervisor: {pipeline.restarts}")


def test_one_percent_poison_is_dead_lettered_exactly_and_the_rest_flows(pipeline: Pipeline) -> None:
    commands = repayment_cycle(loans=400, seed=17)
    rng = random.Random(5)
    poison = [_poison(rng, n) for n in range(len(commands) // 100)]
    metrics_port = free_port()
    pipeline.start_worker(metrics_port=str(metrics_port))
    producer = Producer(pipeline.settings.producer_config())
    slots = set(rng.sample(range(len(commands)), len(poison)))
    pending = iter(poison)
    for index, command in enumerate(commands):
        if index in slots:
            key, value = next(pending)
            pipeline.send_raw(producer, key, value)
        pipeline.send_raw(producer, command.loan_id.encode(), command.model_dump_json().encode())
    producer.flush(60)

    fold = assert_converged(pipeline, commands)
    dead = pipeline.read("ledger.dlq", until=len(poison))
    assert sorted(value or b"" for _k, value, _p, _o in dead) == sorted(
        value for _k, value in poison
    )
    readable = sum(1 for _k, value in poison if _has_readable_ids(value))
    assert statuses(pipeline).get("invalid_command", 0) == readable
    scraped = _scrape(metrics_port)
    assert scraped["ledger_dead_letters_total"] == len(poison)
    assert scraped["ledger_commands_total"] == len(commands)
    assert scraped["ledger_outcomes_total"] == len(commands) + readable
    assert scraped["ledger_events_total"] == len(fold.by_seq)
    assert scraped["ledger_restores_total"] >= 2  # each stage restored its partitions once
    _assert_lag_gauge_settles(pipeline, metrics_port)


def _assert_lag_gauge_settles(pipeline: Pipeline, port: int, timeout_s: float = 30) -> None:
    """ledger_consumer_lag, refreshed from librdkafka's statistics every few seconds, comes
    down to 0 on every partition of both inputs; on a transactional input (events, under
    exactly_once) it may stay at 1, the commit marker no consumer ever receives."""
    marker = 1 if pipeline.guarantee == "exactly_once" else 0
    allowed = {
        pipeline.settings.topic("ledger.commands"): 0,
        pipeline.settings.topic("ledger.events"): marker,
    }
    deadline = time.monotonic() + timeout_s
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        lag = {
            (sample.labels["topic"], sample.labels["partition"]): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "ledger_consumer_lag"
        }
        topics = {topic for topic, _partition in lag}
        settled = all(value <= allowed.get(topic, 0) for (topic, _p), value in lag.items())
        if (topics == set(allowed) and settled) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert topics == set(allowed), lag
    assert settled, lag


def _scrape(port: int) -> dict[str, float]:
    """Sum of every sample of each metric family on the worker's Prometheus endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_total"):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def _has_readable_ids(value: bytes) -> bool:
    try:
        document = json.loads(value)
    except ValueError:
        return False
    return isinstance(document, dict) and "command_id" in document and "loan_id" in document


def _poison(rng: random.Random, n: int) -> tuple[bytes | None, bytes]:
    """Bad input of several kinds, for a loan that also has valid traffic (key loan-17-00000)."""
    key = f"loan-17-{rng.randrange(400):05d}".encode()
    ids = {"command_id": f"poison-{n}", "loan_id": key.decode()}
    kinds: list[bytes] = [
        bytes(rng.randrange(256) for _ in range(40)),
        b'{"type": "OpenLoan", "command_id": ',
        json.dumps({"type": "RequestRepayment", **ids}).encode(),
        json.dumps({"type": "Nope", **ids}).encode(),
        b'{"pad": "' + b"x" * 70_000 + b'"}',
    ]
    return key, kinds[n % len(kinds)]
