"""The shell's errors, under one root, and the one rule that maps them to exit codes.

Every error's message tells the operator what to do next. The command line turns any of them
into that message on stderr and the error's `exit_code` (streams/cli/main.py, `LedgerGroup`);
nothing else in the product picks an exit code for an error.
"""

from __future__ import annotations


class LedgerError(Exception):
    """A condition an operator must fix (configuration, an unreachable broker or channel, a
    missing topic): exit 2."""

    exit_code = 2
    label = "error: "


class RefusedError(LedgerError):
    """The command worked and the answer is no (nothing found, a check failed, a command
    rejected): exit 1."""

    exit_code = 1
    label = ""
