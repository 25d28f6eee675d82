"""`ledger open-loan`, `repay`, `close-day` against a real broker and worker: outcomes, exit codes,
and the error paths (unknown loan, refused request, bad flags, broker down)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ledger.statements import dates_to_reconcile
from streams.cli.main import cli
from streams.reconcile.run import loan_states, partition_days
from streams.topics import ensure_topics
from tests.integration.pipeline import Pipeline

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def line(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    pipeline = Pipeline(kafka_bootstrap, "at_least_once", tmp_path_factory.mktemp("cli-send"))
    ensure_topics(pipeline.settings)
    pipeline.start_worker("w1")
    try:
        yield pipeline
    finally:
        pipeline.stop()


def ledger(line: Pipeline, *arguments: str) -> Result:
    connection = ("--bootstrap-servers", line.bootstrap, "--topic-prefix", line.prefix)
    return CliRunner().invoke(cli, [*connection, *arguments], catch_exceptions=False)


def open_one(line: Pipeline, **flags: str) -> tuple[str, Result]:
    loan = f"C-{uuid.uuid4().hex[:10]}"
    given = {"--principal": "12000.00", "--first-due": "2026-02-01", "--term-months": "3"}
    given |= flags
    options = [item for pair in given.items() for item in pair]
    result = ledger(line, "open-loan", "--loan", loan, "--borrower", f"B-{loan}", *options,
                    "--json", "--timeout", "120")  # fmt: skip
    return loan, result


def test_open_loan_prints_the_outcome_and_a_repeat_is_a_duplicate(line: Pipeline) -> None:
    loan, first = open_one(line)
    assert first.exit_code == 0, first.output
    outcome = json.loads(first.output)
    assert (outcome["loan_id"], outcome["status"]) == (loan, "accepted")
    assert len(outcome["event_ids"]) == 1  # LoanOpened

    again = ledger(line, "open-loan", "--loan", loan, "--borrower", "someone-else",
                   "--principal", "5", "--first-due", "2026-02-01")  # fmt: skip
    assert again.exit_code == 1
    assert "loan_exists" in again.output


def test_repay_and_the_three_doors(line: Pipeline) -> None:
    loan, opened = open_one(line)
    assert opened.exit_code == 0, opened.output

    nothing = ledger(line, "repay", "--loan", loan, "--source", "app")
    assert nothing.exit_code == 1
    assert "nothing_due" in nothing.output  # nothing fell due yet

    first = ledger(line, "repay", "--loan", loan, "--installment", "1", "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["status"] == "accepted"
    agent = ledger(line, "repay", "--loan", loan, "--source", "collection",
                   "--requested-by", "agent-9", "--installment", "1")  # fmt: skip
    assert agent.exit_code == 1
    assert "deduction_in_progress" in agent.output


def test_repay_with_the_same_command_id_is_a_duplicate(line: Pipeline) -> None:
    loan, _opened = open_one(line)
    arguments = ("repay", "--loan", loan, "--installment", "2", "--amount", "100.50")
    first = ledger(line, *arguments, "--command-id", f"r-{loan}")
    again = ledger(line, *arguments, "--command-id", f"r-{loan}", "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(again.output)["status"] == "duplicate"
    conflict = ledger(line, "repay", "--loan", loan, "--installment", "3", "--command-id",
                      f"r-{loan}")  # fmt: skip
    assert conflict.exit_code == 1
    assert "idempotency_conflict" in conflict.output


def test_unknown_loan_is_refused_with_exit_1(line: Pipeline) -> None:
    result = ledger(line, "repay", "--loan", f"nobody-{uuid.uuid4().hex[:6]}")
    assert result.exit_code == 1
    assert "unknown_loan" in result.output


def test_close_day_for_one_loan_then_for_every_loan_by_ticks(line: Pipeline) -> None:
    loan, _opened = open_one(line)
    one = ledger(line, "close-day", "--date", "2026-02-01", "--loan", loan, "--json")
    assert one.exit_code == 0, one.output
    assert json.loads(one.output)["status"] == "accepted"
    stale = ledger(line, "close-day", "--date", "2026-01-15", "--loan", loan)
    assert stale.exit_code == 1
    assert "stale_business_date" in stale.output

    everyone = ledger(line, "close-day", "--date", "2026-03-01", "--json")
    assert everyone.exit_code == 0, everyone.output
    ticks = [json.loads(text) for text in everyone.output.splitlines()]
    assert sorted(tick["partition"] for tick in ticks) == list(range(line.partitions))
    assert {tick["status"] for tick in ticks} == {"accepted"}
    assert sum(tick["loans_closed"] for tick in ticks) >= 1, "the loan's 2nd installment is due"
    again = ledger(line, "close-day", "--date", "2026-03-01")
    assert again.exit_code == 0, again.output
    assert again.output.count(": duplicate") == line.partitions

    # The scheduled reconciler's calendar: the partitions' clocks as the decider wrote them,
    # not the loan's own close 19 days ahead.
    ahead = ledger(line, "close-day", "--date", "2026-03-20", "--loan", loan)
    assert ahead.exit_code == 0, ahead.output
    assert _reconciled_days(line) == [date(2026, 2, 26), date(2026, 2, 27), date(2026, 2, 28)]


def _reconciled_days(line: Pipeline, timeout_s: float = 30) -> list[date]:
    """What `ledger reconcile --every` would reconcile, once every partition's clock record is
    written (at the checkpoint after its tick's batch)."""
    deadline = time.monotonic() + timeout_s
    while len(days := partition_days(line.settings)) < line.partitions:
        assert time.monotonic() < deadline, f"clock records of partitions {sorted(days)} only"
        time.sleep(0.5)
    loans = loan_states(line.settings).values()
    loan_days = (state.business_date for state in loans)
    return dates_to_reconcile(days.values(), loan_days, line.partitions)


def test_no_wait_returns_at_once(line: Pipeline) -> None:
    loan = f"C-{uuid.uuid4().hex[:10]}"
    result = ledger(line, "open-loan", "--loan", loan, "--borrower", "b", "--principal", "100",
                    "--first-due", "2026-02-01", "--no-wait")  # fmt: skip
    assert result.exit_code == 0
    assert "sent" in result.output


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        (("repay", "--loan", "L", "--source", "telepathy"), "telepathy"),
        (("repay", "--loan", "L", "--amount", "12.345"), "at most two decimals"),
        (("repay", "--loan", "L", "--amount", "lots"), "not an amount"),
        (("open-loan", "--loan", "L", "--borrower", "B", "--principal", "1"), "--first-due"),
        (
            (
                "open-loan",
                "--loan",
                "L l",
                "--borrower",
                "B",
                "--principal",
                "1",
                "--first-due",
                "2026-02-01",
            ),
            "loan_id",
        ),
        (("close-day", "--date", "2026-13-01"), "2026-13-01"),
    ],
)
def test_bad_flags_exit_2_with_a_message(
    line: Pipeline, arguments: tuple[str, ...], complaint: str
) -> None:
    result = ledger(line, *arguments)
    assert result.exit_code == 2
    assert complaint in result.output


def test_broker_down_exits_2_quickly_with_what_to_do(tmp_path: Path) -> None:
    began = time.monotonic()
    result = CliRunner().invoke(cli, ["--bootstrap-servers", "127.0.0.1:1", "repay", "--loan", "L"])
    assert result.exit_code == 2
    assert "cannot reach Kafka at 127.0.0.1:1" in result.output
    assert time.monotonic() - began < 30


def test_reconcile_without_a_reachable_channel_exits_2(line: Pipeline) -> None:
    result = CliRunner().invoke(
        cli,
        ["--bootstrap-servers", line.bootstrap, "--topic-prefix", line.prefix, "reconcile",
         "--channel", "alpha", "--date", "2026-02-01"],
        env={"LEDGER_CHANNELS_URL": "http://127.0.0.1:1"},
    )  # fmt: skip
    assert result.exit_code == 2
    assert "cannot fetch the statements of alpha" in result.output


@pytest.mark.parametrize(
    "arguments",
    [
        ("reconcile", "--channel", "alpha"),
        ("reconcile", "--every", "60", "--channel", "alpha"),
        ("reconcile", "--channel", "alpha", "--date", "yesterday"),
    ],
)
def test_reconcile_bad_flags_exit_2(line: Pipeline, arguments: tuple[str, ...]) -> None:
    assert ledger(line, *arguments).exit_code == 2
