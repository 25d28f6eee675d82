"""Fixtures of the integration tests that need the whole saga: worker, channels, gateway."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.saga import Saga, saga_fixture


@pytest.fixture(scope="module", params=["at_least_once", "exactly_once"])
def saga(
    request: pytest.FixtureRequest,
    kafka_bootstrap: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Saga]:
    workdir = tmp_path_factory.mktemp(f"saga-{request.param}")
    yield from saga_fixture(request.param, kafka_bootstrap, workdir)
