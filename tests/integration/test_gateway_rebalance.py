"""aiokafka#738: aiokafka hands out records of newly assigned partitions before the rebalance
listener's `on_partitions_assigned` has finished (the fetcher is unblocked first, the listener
awaited after). The gateway's listener awaits the end offsets; records it was handed in that
window belonged to no partition it knew yet and were dropped, while the consumer's position had
moved past them, so its next commit skipped their open work. Found by the chaos run: a third of
the loans' first debits were never attempted after a gateway restart during a broker fault.

Here a real broker, a worker process, the channel simulator and a gateway whose listener is slow
(as it is while a broker is down): every attempt in the backlog must still be carried out."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from aiohttp import web
from aiokafka import TopicPartition

from schemas.commands import Command, Source
from streams.dev.channels.config import ChannelBehaviour, SimulatorConfig
from streams.dev.channels.server import make_app
from streams.dev.localkafka import free_port
from streams.gateway.channels import ChannelClient
from streams.gateway.service import Gateway
from streams.topics import ensure_topics
from tests.integration.pipeline import Pipeline
from tests.support.builders import open_loan, request

pytestmark = pytest.mark.integration
LOANS = 200


class SlowToTakePartitions(Gateway):
    async def assigned(self, partitions: set[TopicPartition]) -> None:
        await asyncio.sleep(3)  # meanwhile aiokafka already returns their records
        await super().assigned(partitions)


def test_aiokafka_738_records_handed_out_before_the_assignment_listener_ends_are_not_lost(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(kafka_bootstrap, "at_least_once", tmp_path)
    ensure_topics(pipeline.settings)
    loans = [f"L738-{n:04d}" for n in range(LOANS)]
    commands: list[Command] = [
        open_loan(f"open-{loan}", loan, debit_account_ref=f"card-{loan}") for loan in loans
    ]
    commands += [request(f"app-{loan}", Source.APP, loan, installments=(1,)) for loan in loans]
    pipeline.start_worker("w1")
    try:
        pipeline.send(commands)
        pipeline.wait_for_outcomes({c.command_id for c in commands})
        asyncio.run(_run_gateway_until_settled(pipeline, loans))
    finally:
        pipeline.stop()


async def _run_gateway_until_settled(pipeline: Pipeline, loans: list[str]) -> None:
    port = free_port()
    quiet = ChannelBehaviour()
    runner = web.AppRunner(make_app(SimulatorConfig(seed=7, channels={"alpha": quiet})))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    settings = pipeline.settings.model_copy(update={"channels_url": f"http://127.0.0.1:{port}"})
    gateway = SlowToTakePartitions(settings, ChannelClient(settings.channels_url, 2.0))
    stop = asyncio.Event()
    running = asyncio.create_task(gateway.run(stop))
    try:
        unsettled = await _unsettled_after(pipeline, set(loans), timeout_s=60)
    finally:
        stop.set()
        await running
        await runner.cleanup()
    assert unsettled == set(), f"{len(unsettled)} attempts never made, e.g. {sorted(unsettled)[:3]}"


async def _unsettled_after(pipeline: Pipeline, loans: set[str], timeout_s: float) -> set[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        records = await asyncio.to_thread(pipeline.read, "ledger.events", 0, 5)
        done = {
            event["loan_id"]
            for event in (json.loads(value) for _k, value, _p, _o in records if value)
            if event["type"] == "DeductionSucceeded"
        }
        if loans <= done or time.monotonic() > deadline:
            return loans - done
        await asyncio.sleep(1)
