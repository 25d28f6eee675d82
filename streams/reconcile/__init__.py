"""Reconciliation (`ledger reconcile`): a channel's statements against the books, every
difference sent to the decider as a command (`run.py`)."""
