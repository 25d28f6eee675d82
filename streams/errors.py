"""The root error of the shell: its message tells the operator what to do next."""


class LedgerError(Exception):
    """Raised for conditions an operator must fix (configuration, unreachable broker...)."""
