"""The command line's one error rule (streams/errors.py): a message on stderr and the error's exit
code, never a traceback."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from streams.cli.main import cli
from streams.errors import LedgerError, RefusedError


def test_a_setting_that_does_not_parse_is_named_and_exits_2() -> None:
    result = CliRunner().invoke(cli, ["topics", "create"], env={"LEDGER_PARTITIONS": "many"})

    assert result.exit_code == 2
    assert "LEDGER_PARTITIONS" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("error", "code"), [(LedgerError("x"), 2), (RefusedError("x"), 1)])
def test_each_error_carries_its_exit_code(error: LedgerError, code: int) -> None:
    assert error.exit_code == code
