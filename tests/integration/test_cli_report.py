"""`ledger report` on a real broker: the page, its figures against the raw log, and the errors.

One worker (at least once) runs a small repayment cycle once for the module; the figures are
checked against an independent json fold of `ledger.events`, never against ledger code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from streams.cli.main import cli
from streams.dev.localkafka import free_port
from streams.topics import ensure_topics
from tests.integration.kafka_helpers import unique
from tests.integration.pipeline import Pipeline
from tests.support.workload import repayment_cycle

pytestmark = pytest.mark.integration

CHARTS = ("collections", "outstanding", "outcomes", "settlement")


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    line = Pipeline(kafka_bootstrap, "at_least_once", tmp_path_factory.mktemp("report"))
    try:
        ensure_topics(line.settings)
        commands = repayment_cycle(30)
        line.start_worker()
        line.send(commands)
        line.wait_for_outcomes({command.command_id for command in commands})
        yield line
    finally:
        line.stop()


def report(bootstrap: str, prefix: str, out: Path) -> Result:
    arguments = ["--bootstrap-servers", bootstrap, "--topic-prefix", prefix]
    return CliRunner().invoke(cli, [*arguments, "report", "--out", str(out), "--title", "Test"])


def collected_on_the_log(pipeline: Pipeline) -> int:
    """Every DeductionSucceeded amount, each event once (a repeat has the same event id)."""
    events = (json.loads(value or b"{}") for _k, value, _p, _o in pipeline.read("ledger.events"))
    amounts = {
        e["event_id"]: e["amount_minor"] for e in events if e["type"] == "DeductionSucceeded"
    }
    return sum(amounts.values())


def test_the_page_has_four_charts_and_the_money_the_log_collected(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    result = report(pipeline.bootstrap, pipeline.prefix, tmp_path / "site")

    assert result.exit_code == 0, result.output
    written = tmp_path / "site" / "index.html"
    assert result.output.strip() == str(written)
    page = written.read_text(encoding="utf-8")
    for name in CHARTS:
        assert re.search(f'<figure class="panel chart" id="chart-{name}"><h2>[^<]*</h2><svg', page)
    collected = collected_on_the_log(pipeline)
    assert collected > 0
    assert f'id="headline-collected" data-minor="{collected}"' in page
    assert f"¥{collected // 100:,}.{collected % 100:02d}" in page
    assert "<script" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page), "the page must load nothing"


def test_an_empty_log_gives_a_page_that_says_so(kafka_bootstrap: str, tmp_path: Path) -> None:
    empty = Pipeline(kafka_bootstrap, "at_least_once", tmp_path, partitions=1)
    ensure_topics(empty.settings)

    result = report(kafka_bootstrap, empty.prefix, tmp_path / "site")

    assert result.exit_code == 0, result.output
    page = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "Nothing to report yet" in page
    assert "<svg" not in page


def test_a_broker_that_does_not_answer_is_an_error_with_exit_status_2(tmp_path: Path) -> None:
    result = report(f"127.0.0.1:{free_port()}", unique("none") + ".", tmp_path / "site")

    assert result.exit_code == 2
    assert "error: cannot" in result.output
    assert not (tmp_path / "site").exists()


def test_a_missing_topic_is_an_error_with_exit_status_2(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    result = report(kafka_bootstrap, unique("absent") + ".", tmp_path / "site")

    assert result.exit_code == 2
    assert "does not exist" in result.output
