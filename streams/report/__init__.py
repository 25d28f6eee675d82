"""The analysts' report (`ledger report`): the whole event log folded into one static HTML
page (`page.py`)."""
