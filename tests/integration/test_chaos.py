"""A chaos run on a three-node cluster (replication 3, min.insync.replicas 2), under both
guarantees. Loans flow through two batched workers, the gateway and the channel simulator (whose
channels time out, answer late, lose calls and refuse) while a seeded schedule of faults runs:
SIGKILL of a worker (inside or outside a transaction, wherever it happens to be) and of the
gateway, SIGSTOP of a worker past its session timeout then SIGCONT (a zombie that must be
fenced), SIGKILL of a random broker and of the coordinator (the transaction coordinator of a
worker under exactly_once, the decider group's coordinator under at_least_once), and a
whole-cluster restart. Then it heals and checks:

- every command (ours and the gateway's) has an outcome, and none has two different ones;
- the events log is exactly the pure core's replay of the commands log, with no seq gap;
- the balances topic equals an independent fold of the log, and the balances sum to 0;
- the simulator's ground truth: every card's net charge equals what the ledger booked, none
  paid more than was due, and no group of installments was charged more than it owed by the
  orders naming it (a borrower debited twice for the same money);
- consumer lag back to 0 within 2 minutes of the last fault; no transaction left open.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import IsolationLevel, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from schemas.commands import CloseBusinessDayForPartition, LoanCommand, parse_topic_command
from streams.dev.channels.simulator import AccountTruth, GroundTruth
from streams.dev.localkafka import free_port
from streams.dev.localkafka.cluster import LocalCluster
from streams.errors import LedgerError
from streams.settings import LedgerSettings
from streams.topics import ensure_topics
from tests.integration.pipeline import LogFold, Pipeline, outcomes_by_command
from tests.integration.saga import (
    Saga,
    Sent,
    card_net,
    collected_from_card,
    due_on,
    settled,
    workload,
)
from tests.support.chaos import (
    CONSUMER_OFFSETS,
    TRANSACTION_STATE,
    consumer_lag,
    coordinator,
    coordinator_partition,
    installments_overcharged,
    last_offsets,
    restores_logged,
)
from tests.support.oracle import oracle_events_by_partition

pytestmark = pytest.mark.integration

SESSION_TIMEOUT_S = 8.0
# `make chaos` runs this module for longer: CHAOS_SECONDS of load (faults keep coming until its
# end) and CHAOS_SEED for another schedule.
LOAD_SECONDS = float(os.environ.get("CHAOS_SECONDS", "50"))
SEED = os.environ.get("CHAOS_SEED", "")
LOANS = max(1_000, int(LOAD_SECONDS * 20))
HEALED_WITHIN_S = 120
# offsets.topic.num.partitions and transaction.state.log.num.partitions of the local cluster
# (streams/dev/localkafka/broker.py).
COORDINATOR_PARTITIONS = 10
# Channels that misbehave in every way the gateway must survive on its own. Double debits,
# reversals and cross-midnight bookings are the channel's faults, found by reconciliation
# (tests/integration/test_saga_randomized.py), not by the processes: left out here.
ALPHA = {
    "latency_ms": 5,
    "timeout_ms": 200,
    "processing_ms": 400,
    "definite_failure": 0.05,
    "processing": 0.05,
    "timeout_then_debit": 0.03,
    "timeout_no_effect": 0.02,
    "lost_in_transit": 0.02,
}
BETA = {"latency_ms": 5, "processing_ms": 300, "definite_failure": 0.02, "processing": 0.1}
GATEWAY = {
    "sweep_interval_s": "2",
    "takeover_age_s": "10",
    "stuck_alert_age_s": "600",
    "poll_initial_s": "0.1",
    "poll_max_s": "1",
    "channel_call_timeout_s": "2",
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    ports = tuple((free_port(), free_port()) for _ in range(3))
    nodes = LocalCluster(tmp_path_factory.mktemp("cluster"), ports=ports)
    nodes.up()
    try:
        yield nodes
    finally:
        # Its data is thrown away: no controlled shutdown to wait for (stopped one by one, the
        # last node waited out its 30 s for a quorum that had left).
        for node in nodes.nodes:
            node.kill()


@pytest.mark.timeout(int(LOAD_SECONDS) + 900)
@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_nothing_lost_doubled_or_debited_twice_through_process_and_broker_faults(
    cluster: LocalCluster, guarantee: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(cluster.bootstrap, guarantee, tmp_path, partitions=4)
    _create_topics(pipeline.settings.model_copy(update={"replication_factor": 3}))
    rng = random.Random(f"{guarantee}{SEED}")
    loans = [f"C-{n:06d}-{rng.getrandbits(24):06x}" for n in range(LOANS)]
    broke = {f"card-{loan}" for loan in rng.sample(loans, LOANS // 50)}
    day_one, day_two = workload(rng, loans, ticks_on=pipeline.partitions)
    worker = {"session_timeout_s": str(SESSION_TIMEOUT_S)}
    saga = Saga.start(pipeline, gateway=GATEWAY, workers=("w1", "w2"), worker=worker)
    try:
        saga.behave("alpha", **ALPHA, insufficient_funds_accounts=frozenset(broke))
        saga.behave("beta", **BETA)
        _assert_coordinators_placed_as_the_brokers_log_them(cluster, pipeline.settings)
        sender = threading.Thread(target=_send_days, args=(pipeline, day_one, day_two))
        sender.start()
        deadline = time.monotonic() + LOAD_SECONDS
        faults = _run_faults(saga, cluster, rng, deadline)
        sender.join()
        last_fault = time.monotonic()

        # Lag first: measured after the checks below, it counted their own minutes of reading
        # and replaying the logs (105 s of the 120 allowed in a 20-minute run).
        healed_s = _wait_for_no_lag(pipeline, last_fault)
        sent = day_one + day_two
        pipeline.wait_for_outcomes({c.command_id for c in sent}, 600)
        fold, by_loan = settled(saga, timeout_s=600)
        commands, answered = _assert_every_command_answered_once(pipeline)
        accounts = _assert_books(pipeline, fold, commands)
        cards = _assert_cards(saga, loans, broke, by_loan)
        partitions = _assert_no_open_transaction(pipeline.settings)

        exits = Counter(code for _name, code in pipeline.restarts)
        distinct = len({command.command_id for _p, command in commands})
        print(
            f"\n{guarantee}, seed {SEED or '(none)'}: {LOAD_SECONDS:.0f} s of load, "
            f"{len(loans):,} loans, {len(sent):,} commands sent, {len(commands):,} on the log "
            "with the gateway's reports",
            f"faults ({len(faults)}): {dict(Counter(f.split(':')[0] for f in faults))}",
            *(f"  {fault}" for fault in faults),
            f"restarts by the supervisor: {dict(Counter(n for n, _ in pipeline.restarts))}, "
            f"exit codes {dict(exits)}",
            f"restores: {restores_logged(pipeline.workdir.glob('w*.log'))}",
            "checks:",
            f"  accepted commands lost: 0 ({distinct:,} command ids on the log, "
            f"{len(commands) - distinct:,} records of them repeats; each has an outcome and "
            f"each accepted one its events: {answered['accepted']:,} accepted, "
            f"{answered['rejected']:,} rejected)",
            f"  commands with two different outcomes: 0 ({answered['copies']:,} outcome records)",
            f"  events: {len(fold.by_seq):,} = the pure core's replay of the commands log; "
            f"{fold.repeated_identical:,} identical repeats, 0 conflicting",
            f"  seq gaps: 0 in {len(by_loan):,} loans",
            f"  balances: {accounts:,} accounts equal to the independent fold; their sum 0",
            f"  cards: {cards}",
            f"  consumer lag 0 {healed_s:.0f} s after the last fault and the end of the load "
            f"(allowed {HEALED_WITHIN_S} s)",
            f"  open transactions: 0 on {partitions} partitions",
            sep="\n",
        )
        assert healed_s <= HEALED_WITHIN_S, f"lag 0 only {healed_s:.0f} s after the last fault"
    finally:
        pipeline.stop()


def _send_days(pipeline: Pipeline, day_one: list[Sent], day_two: list[Sent]) -> None:
    """Day one over the first 60 % of the load, day two over the rest."""
    producer = Producer(pipeline.settings.producer_config() | {"message.timeout.ms": 300_000})
    # The idempotent producer retries through broker faults (acks=all): each is written once.
    pipeline.send_over(day_one, LOAD_SECONDS * 0.6, producer)
    pipeline.send_over(day_two, LOAD_SECONDS * 0.4, producer)
    assert producer.flush(300) == 0, "commands never acknowledged"


def _run_faults(
    saga: Saga, cluster: LocalCluster, rng: random.Random, deadline: float
) -> list[str]:
    """The seeded schedule, run while the load flows: each kind of fault once, then more drawn
    at random until the load ends; returns what it did, in order."""
    pipeline = saga.pipeline
    done: list[str] = []
    admin = AdminClient(pipeline.settings.confluent_config())

    def kill_worker() -> None:
        name = rng.choice(["w1", "w2"])
        pipeline.signal_worker(name, signal.SIGKILL)  # the supervisor restarts it
        done.append(f"SIGKILL worker: {name}")

    def kill_gateway() -> None:
        pipeline.signal_worker("gateway", signal.SIGKILL)
        done.append("SIGKILL gateway: with its channel calls in flight")

    def freeze_worker() -> None:
        name = rng.choice(["w1", "w2"])
        pipeline.signal_worker(name, signal.SIGSTOP)
        time.sleep(SESSION_TIMEOUT_S + 4)  # its partitions move to the other worker
        pipeline.signal_worker(name, signal.SIGCONT)
        done.append(f"SIGSTOP worker: {name} {SESSION_TIMEOUT_S + 4:.0f} s, SIGCONT")

    def kill_broker() -> None:
        node_id = rng.randint(1, 3)
        _bounce(cluster, node_id, rng)
        done.append(f"SIGKILL broker: {node_id}, restarted")

    def kill_coordinator() -> None:
        try:
            node_id, what = _coordinator(admin, pipeline, rng)
        except (KafkaException, TimeoutError) as error:  # the cluster still healing
            done.append(f"SIGKILL coordinator: none found ({error}), skipped")
            return
        _bounce(cluster, node_id, rng)
        done.append(f"SIGKILL coordinator: broker {node_id}, {what}, restarted")

    def restart_cluster() -> None:
        for node in cluster.nodes:
            node.kill()
        cluster.up()
        done.append("whole cluster: killed and restarted")

    kinds: list[Callable[[], None]] = [
        kill_worker,
        freeze_worker,
        kill_broker,
        kill_coordinator,
        kill_gateway,
    ]
    rng.shuffle(kinds)
    for fault in [*kinds, restart_cluster]:
        time.sleep(rng.uniform(2, 5))
        fault()
    while time.monotonic() < deadline - 30:
        time.sleep(rng.uniform(5, 20))
        rng.choices([*kinds, restart_cluster], weights=[3, 3, 2, 2, 2, 1])[0]()
    cluster.wait_ready()
    return done


def _assert_coordinators_placed_as_the_brokers_log_them(
    cluster: LocalCluster, settings: LedgerSettings, timeout_s: float = 60
) -> None:
    """The partition the faults derive a coordinator from is the one the brokers name in their
    own logs, for the worker groups and (under exactly_once) the deciders' transactional ids.
    Read from the logs: asking the brokers (`describe_consumer_groups`) aborted the test process
    inside librdkafka even on a whole cluster (docs/library-bugs.md)."""
    wanted = {group: ("group " + group + " ", CONSUMER_OFFSETS) for group in settings.worker_groups}
    if settings.processing_guarantee == "exactly_once":
        for worker in ("w1", "w2"):
            transactional_id = f"{settings.group_id}-decider-{worker}"
            wanted[transactional_id] = (f"transactionalId {transactional_id} ", TRANSACTION_STATE)
    deadline = time.monotonic() + timeout_s
    logged = _partitions_logged(cluster, wanted)
    while set(logged) != set(wanted) and time.monotonic() < deadline:
        time.sleep(1)
        logged = _partitions_logged(cluster, wanted)
    placed = {key: coordinator_partition(key, COORDINATOR_PARTITIONS) for key in wanted}
    assert logged == placed, f"the brokers logged {logged}, the hash placed {placed}"


def _partitions_logged(cluster: LocalCluster, wanted: dict[str, tuple[str, str]]) -> dict[str, int]:
    text = "".join(
        (node.home / "broker.log").read_text(errors="replace")
        for node in cluster.nodes
        if (node.home / "broker.log").exists()
    )
    found = {}
    for key, (phrase, topic) in wanted.items():
        pattern = re.escape(phrase) + r".*?" + re.escape(topic) + r"-(\d+)"
        match = re.search(pattern, text)
        if match:
            found[key] = int(match.group(1))
    return found


def _bounce(cluster: LocalCluster, node_id: int, rng: random.Random) -> None:
    node = cluster.node(node_id)
    node.kill()
    time.sleep(rng.uniform(3, 8))
    node.start()


def _coordinator(admin: AdminClient, pipeline: Pipeline, rng: random.Random) -> tuple[int, str]:
    """A broker coordinating the workers: under exactly_once the transaction coordinator of one
    worker's decider, else the decider group's coordinator."""
    settings = pipeline.settings
    if pipeline.guarantee == "exactly_once":
        transactional_id = f"{settings.group_id}-decider-{rng.choice(['w1', 'w2'])}"
        node_id = coordinator(admin, TRANSACTION_STATE, transactional_id)
        return node_id, f"transaction coordinator of {transactional_id}"
    group = settings.worker_groups[0]
    return coordinator(admin, CONSUMER_OFFSETS, group), f"group coordinator of {group}"


def _create_topics(settings: LedgerSettings, timeout_s: float = 60.0) -> None:
    """A cluster that just formed may answer a creation with an error (its controller or
    brokers still settling) yet create the topics: try again, as an operator would."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            ensure_topics(settings)
            return
        except (KafkaException, LedgerError) as error:
            if time.monotonic() > deadline:
                raise
            print(f"creating the topics failed, trying again: {error}")
            time.sleep(2)


def _assert_every_command_answered_once(
    pipeline: Pipeline,
) -> tuple[list[tuple[int, LoanCommand | CloseBusinessDayForPartition]], Counter[str]]:
    """Every command on the log, ours, the gateway's and the business clock's, has an outcome,
    and all the copies of a command's outcome have the same effect. Returns the commands in log
    order, with their partitions, and the count of outcomes by status (of each command's first)
    and of outcome records (`copies`)."""
    records = sorted(pipeline.read("ledger.commands"), key=lambda r: (r[2], r[3]))
    commands = [(p, parse_topic_command(value or b"")) for _key, value, p, _o in records]
    wanted = {command.command_id for _p, command in commands}
    pipeline.wait_for_outcomes(wanted, timeout_s=300)
    outcomes = outcomes_by_command(pipeline.read("ledger.outcomes"))
    missing = wanted - outcomes.keys()
    assert not missing, f"{len(missing)} commands without an outcome, e.g. {sorted(missing)[:3]}"
    doubled = {c: copies for c, copies in outcomes.items() if len({_effect(o) for o in copies}) > 1}
    assert not doubled, f"{len(doubled)} with two outcomes: {list(doubled.items())[:3]}"
    answered = Counter(json.loads(outcomes[c][0])["status"] for c in wanted)
    answered["copies"] = sum(len(outcomes[c]) for c in wanted)
    return commands, answered


def _effect(outcome: bytes) -> tuple[str, str | None, tuple[str, ...]]:
    """What an outcome says happened. A command sent again (the gateway repeats its report
    after a restart) is answered `duplicate` with the events of the first: the same effect."""
    answer = json.loads(outcome)
    status = "accepted" if answer["status"] == "duplicate" else answer["status"]
    return status, answer["reason"], tuple(answer["event_ids"])


def _assert_books(
    pipeline: Pipeline,
    fold: LogFold,
    commands: list[tuple[int, LoanCommand | CloseBusinessDayForPartition]],
) -> int:
    """The log is the pure core's replay of the commands log (partition by partition, in
    offset order); the balances topic is the log's fold; the balances sum to 0. Returns the
    number of accounts."""
    assert fold.conflicting_repeats == []
    assert fold.seq_gaps() == []
    assert fold.by_seq == oracle_events_by_partition(commands), "the log differs from the replay"
    expected = dict(fold.balances)
    assert sum(expected.values()) == 0
    assert pipeline.wait_for_balances(expected, timeout_s=180) == expected
    return len(expected)


def _assert_cards(
    saga: Saga, loans: list[str], broke: set[str], by_loan: dict[str, list[dict[str, Any]]]
) -> str:
    """The simulator's ground truth against the ledger's log, card by card; returns the counts."""
    truth = saga.truth()
    nets = {loan: card_net(truth.accounts.get(f"card-{loan}", AccountTruth())) for loan in loans}
    disagree = [loan for loan in loans if nets[loan] != collected_from_card(by_loan[loan], loan)]
    assert disagree == [], f"{len(disagree)} cards disagree with the books, e.g. {disagree[:3]}"
    over = [loan for loan in loans if nets[loan] > due_on(by_loan[loan])]
    assert over == [], f"{len(over)} cards paid more than was due, e.g. {over[:3]}"
    twice = installments_overcharged(truth, by_loan)
    assert twice == [], (
        f"{len(twice)} loans debited twice for the same installments, e.g. {twice[:3]}; "
        "the first loan's log:\n" + _story(by_loan[twice[0][0]], truth)
    )
    charged = [card for card in broke if truth.accounts.get(card, AccountTruth()).charged_minor]
    assert charged == [], "a card without funds was charged"
    paid = sum(1 for net in nets.values() if net > 0)
    assert paid > len(loans) // 2
    orders = sum(1 for order in truth.orders.values() if order.charges)
    return (
        f"{paid:,} of {len(loans):,} paid through {orders:,} charged orders; 0 disagree with "
        f"the books, 0 paid more than due, 0 debited twice for the same installments, 0 of "
        f"{len(broke)} cards without funds charged"
    )


def _story(events: list[dict[str, Any]], truth: GroundTruth) -> str:
    """One line per event of a loan, with what the simulator says of each order: enough to tell
    from a failed run's output how an installment came to be paid twice."""
    lines = []
    for event in events:
        order = event.get("order_id")
        charged = truth.orders.get(order) if order else None
        fields = {
            k: v
            for k, v in event.items()
            if k not in ("postings", "loan_id", "event_id", "schedule", "occurred_at")
        }
        lines.append(f"  {fields}" + (f" <- simulator: {charged}" if charged else ""))
    return "\n".join(lines)


def _wait_for_no_lag(pipeline: Pipeline, last_fault: float, timeout_s: float = 600) -> float:
    """Seconds from the last fault until every group (the workers' and the gateway's) has
    committed up to the end of what it reads."""
    settings = pipeline.settings
    groups = (*settings.worker_groups, f"{settings.group_id}-gateway")
    deadline = time.monotonic() + timeout_s
    while True:
        lag = consumer_lag(settings.confluent_config(), groups)
        if all(behind == 0 for behind in lag.values()):
            return time.monotonic() - last_fault
        assert time.monotonic() < deadline, f"consumer lag never reached 0: {lag}"
        time.sleep(1)


def _assert_no_open_transaction(settings: LedgerSettings) -> int:
    """On every partition the last stable offset equals the high watermark; returns how many
    partitions were checked."""
    admin = AdminClient(settings.confluent_config())
    names = ("ledger.events", "ledger.outcomes", "ledger.balances")
    partitions = [
        TopicPartition(settings.topic(name), p)
        for name in names
        for p in range(settings.partitions)
    ]
    stable = last_offsets(admin, partitions, IsolationLevel.READ_COMMITTED)
    assert stable == last_offsets(admin, partitions, IsolationLevel.READ_UNCOMMITTED)
    return len(partitions)
