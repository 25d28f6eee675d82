"""`make demo`: a month of repayments end to end (`python -m streams.dev.demo`)."""
