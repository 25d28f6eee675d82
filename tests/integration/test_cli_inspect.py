"""The inspection commands (balance, balances, history, replay, export) on a real pipeline.

One worker settles two batches of a repayment cycle; every command's answer is checked against
an independent json-only fold of the raw log (`LogFold`), never against the projector's code.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from click.testing import CliRunner, Result
from confluent_kafka import Producer

from schemas.commands import Command
from streams.cli.main import cli
from streams.topics import ensure_topics
from tests.integration.pipeline import LogFold, Pipeline, RawRecord
from tests.support.oracle import oracle_events
from tests.support.workload import repayment_cycle

pytestmark = pytest.mark.integration

LOAN = "loan-7-00003"  # of the first batch: opened, due, one attempt that succeeded
UNREACHABLE = "127.0.0.1:1"


@dataclass
class Settled:
    pipeline: Pipeline
    fold: LogFold  # every event
    first: LogFold  # the first batch's events only
    first_ends: dict[int, int]  # each partition's end offset after the first batch
    moment: str  # RFC 3339, after the first batch and before the second
    balance_records: list[RawRecord]

    def ledger(self, *arguments: str) -> Result:
        return CliRunner().invoke(
            cli,
            [
                "--bootstrap-servers", self.pipeline.bootstrap,
                "--topic-prefix", self.pipeline.prefix,
                *arguments,
            ],
        )  # fmt: skip

    def loan_events(self, loan_id: str) -> list[dict[str, object]]:
        found = [(seq, raw) for (loan, seq), raw in self.fold.by_seq.items() if loan == loan_id]
        return [json.loads(raw) for _seq, raw in sorted(found)]


def settle(pipeline: Pipeline, commands: list[Command], so_far: int) -> list[RawRecord]:
    """Send the commands; return the log once it holds all their events and the balances topic
    shows them."""
    pipeline.send(commands)
    pipeline.wait_for_outcomes({c.command_id for c in commands})
    records = pipeline.read("ledger.events", until=so_far + len(oracle_events(commands)))
    expected = dict(LogFold().fold(records).balances)
    assert pipeline.wait_for_balances(expected) == expected, pipeline.log_tail()
    return records


def end_offsets(records: list[RawRecord], partitions: int) -> dict[int, int]:
    ends = dict.fromkeys(range(partitions), 0)
    for _key, _value, partition, offset in records:
        ends[partition] = max(ends[partition], offset + 1)
    return ends


@pytest.fixture(scope="module")
def settled(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settled]:
    pipeline = Pipeline(kafka_bootstrap, "at_least_once", tmp_path_factory.mktemp("inspect"))
    ensure_topics(pipeline.settings)
    pipeline.start_worker()
    try:
        first = settle(pipeline, repayment_cycle(25, seed=7), 0)
        moment = datetime.now(UTC).isoformat()
        time.sleep(0.05)  # the second batch's records are stamped strictly later
        records = settle(pipeline, repayment_cycle(25, seed=8), len(first))
        yield Settled(
            pipeline=pipeline,
            fold=LogFold().fold(records),
            first=LogFold().fold(first),
            first_ends=end_offsets(first, pipeline.partitions),
            moment=moment,
            balance_records=pipeline.read("ledger.balances"),
        )
    finally:
        pipeline.stop()


def as_json(result: Result) -> dict[str, object]:
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert isinstance(document, dict)
    return document


# ---- balance, balances ---------------------------------------------------------------------------


def test_a_shared_accounts_balance_is_the_sum_of_its_shards(settled: Settled) -> None:
    account = "channel:alpha:clearing"
    document = as_json(settled.ledger("balance", account, "--json"))

    assert document["balance_minor"] == settled.fold.balances[account] != 0
    shards = document["shards"]
    assert isinstance(shards, list)
    assert len(shards) > 1
    assert sum(shard["balance_minor"] for shard in shards) == document["balance_minor"]


def test_a_loan_accounts_balance_reads_in_yuan_and_fen(settled: Settled) -> None:
    account = f"loan:{LOAN}:principal"
    result = settled.ledger("balance", account)

    assert result.exit_code == 0, result.output
    amount = settled.fold.balances[account]
    assert f"{amount // 100:,}.{amount % 100:02d} CNY ({amount})" in result.stdout


def test_an_unknown_account_exits_1(settled: Settled) -> None:
    result = settled.ledger("balance", "loan:nobody:principal")
    assert result.exit_code == 1
    assert "no balance for account loan:nobody:principal" in result.stderr


def test_balances_lists_every_account_of_the_loan(settled: Settled) -> None:
    document = as_json(settled.ledger("balances", "--loan", LOAN, "--json"))

    accounts = document["accounts"]
    assert isinstance(accounts, list)
    expected = {a: b for a, b in settled.fold.balances.items() if a.startswith(f"loan:{LOAN}:")}
    assert {entry["account"]: entry["balance_minor"] for entry in accounts} == expected


def test_balances_of_an_unknown_loan_exits_1(settled: Settled) -> None:
    result = settled.ledger("balances", "--loan", "nobody")
    assert result.exit_code == 1
    assert "no accounts for loan nobody" in result.stderr


# ---- history -------------------------------------------------------------------------------------


def test_history_shows_every_event_in_seq_order_with_its_postings(settled: Settled) -> None:
    document = as_json(settled.ledger("history", LOAN, "--json"))

    logged = settled.loan_events(LOAN)
    events = document["events"]
    assert isinstance(events, list)
    assert [e["seq"] for e in events] == [e["seq"] for e in logged]
    assert [e["type"] for e in events] == [e["type"] for e in logged]
    assert [e["postings"] for e in events] == [e["postings"] for e in logged]
    attempts = document["attempts"]
    assert isinstance(attempts, list)
    assert [(a["channel"], a["status"]) for a in attempts] == [("alpha", "succeeded")]


def test_history_reads_as_a_timeline_with_the_attempts_at_the_end(settled: Settled) -> None:
    # Through the installed entry point, as an operator runs it.
    environment = {
        "LEDGER_BOOTSTRAP_SERVERS": settled.pipeline.bootstrap,
        "LEDGER_TOPIC_PREFIX": settled.pipeline.prefix,
    }
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli.main", "history", LOAN],
        capture_output=True,
        text=True,
        env=settled.pipeline.environment("cli") | environment,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    started = next(e for e in settled.loan_events(LOAN) if e["type"] == "DeductionStarted")
    attempt = str(started["attempt_id"])[:8]
    assert lines[0] == f"loan {LOAN} (CNY)"
    assert lines[1].split()[:4] == ["1", "2026-01-01", "09:00:00", "LoanOpened"]
    assert any(
        line.strip().startswith(f"Dr loan:{LOAN}:principal  Cr bank:funding") for line in lines
    )
    assert any(f"attempt {attempt} collected" in line for line in lines)
    table = lines[lines.index("attempts") + 2]
    assert table.split()[:3] == [attempt, "alpha", "app"]
    assert table.split()[-3] == "succeeded"


def test_history_of_an_unknown_loan_exits_1(settled: Settled) -> None:
    result = settled.ledger("history", "nobody")
    assert result.exit_code == 1
    assert "no events for loan nobody" in result.stderr


# ---- replay --------------------------------------------------------------------------------------


def replayed(document: dict[str, object]) -> dict[str, int]:
    balances = document["balances"]
    assert isinstance(balances, list)
    return {entry["account"]: entry["balance_minor"] for entry in balances}


def test_replay_folds_the_whole_log(settled: Settled) -> None:
    document = as_json(settled.ledger("replay", "--json", "--progress"))

    assert replayed(document) == settled.fold.balances
    summary = document["summary"]
    assert isinstance(summary, dict)
    assert summary["events"] == len(settled.fold.by_seq)
    assert summary["sum_minor"] == 0
    assert summary["repeats_skipped"] == 0
    assert document["verify"] is None


def test_replay_prints_a_summary_and_the_balances(settled: Settled) -> None:
    result = settled.ledger("replay")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"replayed {len(settled.fold.by_seq):,} events (")
    assert lines[1].endswith("sum of balances 0 (must be 0)")
    clearing = settled.fold.balances["channel:alpha:clearing"]
    assert any(line.split()[::3] == ["channel:alpha:clearing", str(clearing)] for line in lines)


def test_replay_verify_passes_on_a_settled_pipeline(settled: Settled) -> None:
    result = settled.ledger("replay", "--verify")
    assert result.exit_code == 0, result.output
    assert "verified: every account equals ledger.balances" in result.stdout


def test_replay_verify_fails_on_a_wrong_balance_record(settled: Settled) -> None:
    account = f"loan:{LOAN}:principal"
    key, value, partition, _offset = [
        r for r in settled.balance_records if r[0] == account.encode()
    ][-1]
    assert value is not None
    wrong = json.loads(value) | {"balance_minor": json.loads(value)["balance_minor"] + 1}
    publish(settled, key, json.dumps(wrong).encode(), partition)
    try:
        result = settled.ledger("replay", "--verify", "--json")
    finally:
        publish(settled, key, value, partition)  # put the right balance back on top

    assert result.exit_code == 1
    assert "verification failed: 1 account differs from ledger.balances" in result.stderr
    document = json.loads(result.stdout)
    right = settled.fold.balances[account]
    assert document["verify"]["differences"] == [
        {"account": account, "replayed_minor": right, "published_minor": right + 1}
    ]


def publish(settled: Settled, key: bytes | None, value: bytes, partition: int) -> None:
    # On the partition the projector wrote the key to: the latest record per key wins there.
    producer = Producer({"bootstrap.servers": settled.pipeline.bootstrap})
    topic = settled.pipeline.settings.topic("ledger.balances")
    producer.produce(topic, key=key, value=value, partition=partition)
    assert producer.flush(30) == 0


def test_replay_until_a_moment_gives_the_balances_of_that_moment(settled: Settled) -> None:
    document = as_json(settled.ledger("replay", "--until", settled.moment, "--json"))

    assert replayed(document) == settled.first.balances
    assert replayed(document) != settled.fold.balances
    summary = document["summary"]
    assert isinstance(summary, dict)
    assert summary["events"] == len(settled.first.by_seq)


def test_replay_until_offsets_stops_each_partition_there(settled: Settled) -> None:
    offsets = ",".join(f"{p}:{end}" for p, end in settled.first_ends.items())
    document = as_json(settled.ledger("replay", "--until", offsets, "--json"))
    assert replayed(document) == settled.first.balances


# ---- export --------------------------------------------------------------------------------------


def test_export_balances_as_csv(settled: Settled, tmp_path: Path) -> None:
    out = tmp_path / "balances.csv"
    result = settled.ledger("export", "balances", "--format", "csv", "--out", str(out))

    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert list(rows[0]) == ["account", "balance_minor", "currency", "as_of"]
    assert {r["account"]: int(r["balance_minor"]) for r in rows} == settled.fold.balances
    assert {r["currency"] for r in rows} == {"CNY"}
    assert all(datetime.fromisoformat(r["as_of"]).tzinfo is not None for r in rows)


def test_export_balances_as_parquet(settled: Settled, tmp_path: Path) -> None:
    out = tmp_path / "balances.parquet"
    result = settled.ledger("export", "balances", "--format", "parquet", "--out", str(out))

    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.column_names == ["account", "balance_minor", "currency", "as_of"]
    rows = table.to_pylist()
    assert {r["account"]: r["balance_minor"] for r in rows} == settled.fold.balances
    assert all(r["as_of"].tzinfo is not None for r in rows)


# ---- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param(["replay", "--until", "yesterday"], id="until-not-a-time"),
        pytest.param(["replay", "--until", "2026-01-01T00:00:00"], id="until-without-offset"),
        pytest.param(["replay", "--verify", "--until", "0:1"], id="verify-with-until"),
        pytest.param(["replay", "--until", "99:1"], id="until-unknown-partition"),
        pytest.param(["balances"], id="balances-without-loan"),
        pytest.param(["export", "balances", "--format", "xml", "--out", "x"], id="format"),
        pytest.param(["export", "balances", "--format", "parquet", "--out", "-"], id="parquet-out"),
        pytest.param(["export", "balances", "--out", "/no/such/folder/x.csv"], id="out-folder"),
        pytest.param(["history", "--loan", "x"], id="unknown-option"),
    ],
)
def test_bad_flags_exit_2(settled: Settled, arguments: list[str]) -> None:
    result = settled.ledger(*arguments)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip()


def ledger_at(bootstrap: str, *arguments: str) -> Result:
    return CliRunner().invoke(
        cli, ["--bootstrap-servers", bootstrap, "--topic-prefix", "nope.", *arguments]
    )


def test_a_wrong_topic_prefix_exits_2_and_says_what_to_check(kafka_bootstrap: str) -> None:
    result = ledger_at(kafka_bootstrap, "replay")
    assert result.exit_code == 2
    assert "topic nope.ledger.events does not exist: check --topic-prefix" in result.stderr


@pytest.mark.parametrize("arguments", [["balance", "bank:funding"], ["replay"]])
def test_a_broker_out_of_reach_exits_2_in_seconds(arguments: list[str]) -> None:
    started = time.monotonic()
    result = ledger_at(UNREACHABLE, *arguments)

    assert result.exit_code == 2, result.output
    assert "cannot read nope.ledger" in result.stderr
    assert "check that the broker runs" in result.stderr
    assert time.monotonic() - started < 15
