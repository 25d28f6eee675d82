"""The sweeper resumes open work nobody works on: a worker process and a real broker; the gateway
and the channel simulator run in this test's event loop so the test can kill a gateway task."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest
from aiohttp import web

from schemas.commands import Source
from streams.client import LedgerClient
from streams.dev.channels.config import ChannelBehaviour, SimulatorConfig
from streams.dev.channels.server import make_app
from streams.dev.localkafka import free_port
from streams.gateway.channels import ChannelClient
from streams.gateway.service import Gateway
from streams.topics import ensure_topics
from tests.integration.pipeline import Pipeline
from tests.support.builders import open_loan, request

pytestmark = pytest.mark.integration
SLOW_ASYNC = ChannelBehaviour(processing=1.0, processing_ms=4_000)


def test_the_sweeper_takes_over_an_attempt_whose_task_died(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(kafka_bootstrap, "at_least_once", tmp_path)
    ensure_topics(pipeline.settings)
    pipeline.start_worker("w1")
    try:
        takeovers, kinds = asyncio.run(_scenario(pipeline))
    finally:
        pipeline.stop()
    assert takeovers >= 1
    assert kinds.count("DeductionSucceeded") == 1
    assert "DeductionFailed" not in kinds


async def _scenario(pipeline: Pipeline) -> tuple[float, list[str]]:
    port = free_port()
    config = SimulatorConfig(seed=3, channels={"alpha": SLOW_ASYNC, "beta": ChannelBehaviour()})
    runner = web.AppRunner(make_app(config))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    settings = pipeline.settings.model_copy(
        update={
            "channels_url": f"http://127.0.0.1:{port}",
            "sweep_interval_s": 0.5,
            "takeover_age_s": 1.5,
            "poll_initial_s": 0.2,
            "poll_max_s": 0.5,
        }
    )
    gateway = Gateway(settings, ChannelClient(settings.channels_url, 2.0))
    stop = asyncio.Event()
    running = asyncio.create_task(gateway.run(stop))
    loan = f"S-{uuid.uuid4().hex[:10]}"
    try:
        await asyncio.to_thread(_open_and_request, pipeline, loan)
        await _kill_the_attempt_task(pipeline, loan)
        kinds = await _until(pipeline, loan, "DeductionSucceeded")
    finally:
        stop.set()
        await running
        await runner.cleanup()
    takeovers = gateway.metrics.registry.get_sample_value("ledger_gateway_takeovers_total")
    return takeovers or 0.0, kinds


def _open_and_request(pipeline: Pipeline, loan: str) -> None:
    with LedgerClient(pipeline.settings) as client:
        opened = open_loan(f"open-{loan}", loan, debit_account_ref=f"card-{loan}")
        assert client.send_and_wait(opened, timeout_s=120).status == "accepted"
        ask = request(f"app-{loan}", Source.APP, loan, installments=(1,))
        assert client.send_and_wait(ask, timeout_s=60).status == "accepted"


async def _kill_the_attempt_task(pipeline: Pipeline, loan: str) -> None:
    """Cancel the task polling the attempt, as an unexpected error inside it would end it:
    once its "processing" report is in the log and folded, so no new event restarts it."""
    await _until(pipeline, loan, "DeductionProcessing")
    await asyncio.sleep(1.0)
    tasks = [
        task
        for task in asyncio.all_tasks()
        if task.get_name().startswith("gateway-") and task.get_name() != "gateway-sweeper"
    ]
    assert tasks, "the gateway has no task for the attempt"
    for task in tasks:
        task.cancel()


async def _until(pipeline: Pipeline, loan: str, kind: str, timeout_s: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout_s
    kinds: list[str] = []
    while time.monotonic() < deadline:
        records = await asyncio.to_thread(pipeline.read, "ledger.events", 0, 5)
        events = [json.loads(v) for k, v, _p, _o in records if k == loan.encode() and v]
        kinds = [event["type"] for event in sorted(events, key=lambda e: e["seq"])]
        if kind in kinds:
            return kinds
        await asyncio.sleep(0.3)
    raise AssertionError(f"{loan}: no {kind} in {kinds}")
