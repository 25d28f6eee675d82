"""The `ledger` command line: the shell around the pure core and the processes (`main.py`)."""
