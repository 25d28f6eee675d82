"""The broker fixture fails loudly, never skips, when the broker it is told to use is absent."""

from __future__ import annotations

import os
import subprocess
import sys

from streams.dev.localkafka import free_port


def test_integration_tests_fail_when_the_named_broker_is_absent() -> None:
    nobody = f"127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/integration/test_smoke.py", "-k", "admin_client"],
        env=os.environ | {"KAFKA_BOOTSTRAP_SERVERS": nobody},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert result.returncode == 1, result.stdout[-2000:]
    assert f"KAFKA_BOOTSTRAP_SERVERS={nobody} does not answer" in result.stdout
    assert "1 error" in result.stdout
    assert "skipped" not in result.stdout
