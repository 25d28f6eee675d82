"""Development tooling: the local broker and cluster, the channel simulator, the demo, the
benchmarks and `make up`'s services. The product never imports it (tests/unit/test_layout.py)."""

from __future__ import annotations

import sys

# The `ledger` command line, as a child process of this interpreter.
LEDGER = (sys.executable, "-m", "streams.cli.main")
