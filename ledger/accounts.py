"""The chart of accounts of docs/design.md: one function or constant per account."""

BANK_FUNDING = "bank:funding"
INCOME_INTEREST = "income:interest"
INCOME_FEE = "income:fee"


def principal(loan_id: str) -> str:
    return f"loan:{loan_id}:principal"


def interest(loan_id: str) -> str:
    return f"loan:{loan_id}:interest"


def fee(loan_id: str) -> str:
    return f"loan:{loan_id}:fee"


def overpayment(loan_id: str) -> str:
    return f"loan:{loan_id}:overpayment"


def clearing(channel: str) -> str:
    return f"channel:{channel}:clearing"


def receivables(loan_id: str) -> tuple[str, str, str]:
    """The accounts whose balance is what the borrower owes; never below zero."""
    return principal(loan_id), interest(loan_id), fee(loan_id)
