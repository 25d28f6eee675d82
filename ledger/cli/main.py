"""Entry point of the `ledger` command line."""


def main() -> None:
    print("ledger")
