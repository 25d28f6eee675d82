"""The channel simulator over real HTTP on 127.0.0.1, driven through the gateway's client (its
SimulatorClient subclass adds the simulator's own admin calls)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import date
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from schemas.channel import (
    DebitFailed,
    DebitNotFound,
    DebitProcessing,
    DebitRequest,
    DebitSucceeded,
    RefundRequest,
)
from streams.dev.channels.admin import SimulatorClient
from streams.dev.channels.config import ChannelBehaviour, SimulatorConfig
from streams.dev.channels.server import make_app
from streams.dev.channels.simulator import AccountTruth
from streams.gateway.channels import (
    ChannelRejected,
    ChannelTimeout,
    ChannelUnreachable,
)

pytestmark = pytest.mark.integration

DAY = date(2025, 3, 14)
AMOUNT = 10_000
Scenario = Callable[[SimulatorClient], Awaitable[None]]


@asynccontextmanager
async def serving(config: SimulatorConfig) -> AsyncIterator[str]:
    """The simulator on a free port of 127.0.0.1, for the duration of the block."""
    runner = web.AppRunner(make_app(config), shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def drive(scenario: Scenario, *, timeout_s: float = 2.0, **channels: ChannelBehaviour) -> None:
    """Run `scenario` against a fresh server whose channels are `channels`."""

    async def main() -> None:
        config = SimulatorConfig(seed=11, channels=channels or {"alpha": ChannelBehaviour()})
        async with serving(config) as url, SimulatorClient(url, timeout_s) as client:
            await scenario(client)

    asyncio.run(main())


def debit(order_id: str = "order-1", account_ref: str = "card-1") -> DebitRequest:
    return DebitRequest(
        order_id=order_id,
        account_ref=account_ref,
        amount_minor=AMOUNT,
        currency="CNY",
        business_date=DAY,
    )


async def raw(method: str, url: str, body: object = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.request(method, url, json=body) as reply:
        return reply.status, await reply.json(content_type=None)


def body(order_id: str) -> dict[str, Any]:
    return debit(order_id).model_dump(mode="json")


# ---- through the client ------------------------------------------------------------------


def test_debit_query_statement_and_ground_truth() -> None:
    async def scenario(client: SimulatorClient) -> None:
        assert await client.health()
        answer = await client.debit("alpha", debit())
        assert isinstance(answer, DebitSucceeded)
        assert await client.query("alpha", "order-1") == answer
        assert await client.debit("alpha", debit()) == answer
        lines = (await client.statement("alpha", DAY)).lines
        assert [(line.order_id, line.channel_reference) for line in lines] == [
            ("order-1", answer.channel_reference)
        ]
        truth = await client.ground_truth()
        assert truth.accounts == {"card-1": AccountTruth(charged_minor=AMOUNT, charges=1)}

    drive(scenario)


def test_timeout_then_debit_times_out_but_the_query_says_succeeded() -> None:
    async def scenario(client: SimulatorClient) -> None:
        started = time.monotonic()
        with pytest.raises(ChannelTimeout, match="504"):
            await client.debit("alpha", debit())
        assert time.monotonic() - started >= 0.2
        answer = await client.query("alpha", "order-1")
        assert isinstance(answer, DebitSucceeded)
        assert await client.debit("alpha", debit()) == answer
        assert (await client.ground_truth()).orders["order-1"].charges == 1

    drive(scenario, alpha=ChannelBehaviour(timeout_then_debit=1.0, timeout_ms=200))


def test_latency_delays_the_answer_and_a_slow_answer_times_the_client_out() -> None:
    async def scenario(client: SimulatorClient) -> None:
        started = time.monotonic()
        assert isinstance(await client.debit("alpha", debit()), DebitSucceeded)
        assert time.monotonic() - started >= 0.15
        await client.set_behaviour("alpha", ChannelBehaviour(latency_ms=600))
        with pytest.raises(ChannelTimeout, match="no answer within"):
            await client.debit("alpha", debit("order-2"))
        # The channel took the order; only its answer was too slow.
        assert isinstance(await client.query("alpha", "order-2"), DebitSucceeded)

    drive(scenario, timeout_s=0.4, alpha=ChannelBehaviour(latency_ms=150))


def test_unknown_order_is_not_found_and_a_lost_order_can_be_resubmitted() -> None:
    async def scenario(client: SimulatorClient) -> None:
        assert await client.query("alpha", "nobody") == DebitNotFound(order_id="nobody")
        with pytest.raises(ChannelTimeout):
            await client.debit("alpha", debit())
        assert await client.query("alpha", "order-1") == DebitNotFound(order_id="order-1")
        assert isinstance(await client.debit("alpha", debit()), DebitSucceeded)
        assert (await client.ground_truth()).orders["order-1"].charges == 1

    drive(scenario, alpha=ChannelBehaviour(lost_in_transit=1.0))


def test_processing_resolves_when_the_admin_clock_advances() -> None:
    async def scenario(client: SimulatorClient) -> None:
        assert await client.debit("gamma", debit()) == DebitProcessing(order_id="order-1")
        assert await client.query("gamma", "order-1") == DebitProcessing(order_id="order-1")
        await client.advance_clock(60_000)
        assert isinstance(await client.query("gamma", "order-1"), DebitSucceeded)
        assert len((await client.statement("gamma", DAY)).lines) == 1

    drive(scenario, gamma=ChannelBehaviour(processing=1.0, processing_ms=60_000))


def test_refunds_are_paid_once_per_refund_id() -> None:
    async def scenario(client: SimulatorClient) -> None:
        await client.debit("alpha", debit())
        refund = RefundRequest(
            refund_id="refund-1",
            order_id="order-1",
            account_ref="card-1",
            amount_minor=AMOUNT,
            currency="CNY",
        )
        first = await client.refund("alpha", refund)
        assert await client.refund("alpha", refund) == first
        account = (await client.ground_truth()).accounts["card-1"]
        assert account == AccountTruth(charged_minor=AMOUNT, refunded_minor=AMOUNT, charges=1)

    drive(scenario)


def test_never_answer_times_the_client_out_until_the_channel_recovers() -> None:
    async def scenario(client: SimulatorClient) -> None:
        with pytest.raises(ChannelTimeout):
            await client.debit("alpha", debit())
        with pytest.raises(ChannelTimeout):
            await client.query("alpha", "order-1")
        await client.set_behaviour("alpha", ChannelBehaviour(definite_failure=1.0))
        assert await client.query("alpha", "order-1") == DebitNotFound(order_id="order-1")
        assert isinstance(await client.debit("alpha", debit()), DebitFailed)

    started = time.monotonic()
    drive(scenario, timeout_s=0.2, alpha=ChannelBehaviour(never_answer=True))
    # Hung requests are released at shutdown instead of holding the server for its timeout.
    assert time.monotonic() - started < 2.0


def test_requests_still_hung_at_shutdown_do_not_hold_the_server() -> None:
    async def scenario(client: SimulatorClient) -> None:
        with pytest.raises(ChannelTimeout):
            await client.debit("alpha", debit())

    started = time.monotonic()
    drive(scenario, timeout_s=0.2, alpha=ChannelBehaviour(never_answer=True))
    assert time.monotonic() - started < 1.5


def test_unknown_channel_is_rejected() -> None:
    async def scenario(client: SimulatorClient) -> None:
        with pytest.raises(ChannelRejected, match="404"):
            await client.debit("omega", debit())
        with pytest.raises(ChannelRejected, match="unknown_channel"):
            await client.query("omega", "order-1")

    drive(scenario)


def test_a_stopped_channel_is_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def scenario() -> None:
        async with SimulatorClient(f"http://127.0.0.1:{port}", 1.0) as client:
            with pytest.raises(ChannelUnreachable, match="check that the channel runs"):
                await client.health()

    asyncio.run(scenario())


# ---- the JSON contract, byte for byte ----------------------------------------------------


def test_wire_json_matches_the_contract() -> None:
    async def scenario(client: SimulatorClient) -> None:
        url = client.base_url
        status, succeeded = await raw("POST", f"{url}/channels/alpha/debits", body("a-1"))
        keys = {"order_id", "status", "channel_reference", "amount_minor"}
        assert (status, set(succeeded)) == (200, keys)
        assert (succeeded["status"], succeeded["amount_minor"]) == ("succeeded", AMOUNT)
        assert await raw("POST", f"{url}/channels/beta/debits", body("b-1")) == (
            200,
            {"order_id": "b-1", "status": "failed", "code": "bank_down", "retriable": True},
        )
        assert await raw("POST", f"{url}/channels/gamma/debits", body("g-1")) == (
            200,
            {"order_id": "g-1", "status": "processing"},
        )
        assert await raw("POST", f"{url}/channels/delta/debits", body("d-1")) == (
            504,
            {"error": "timeout"},
        )
        assert await raw("GET", f"{url}/channels/alpha/debits/nope") == (
            404,
            {"order_id": "nope", "status": "not_found"},
        )
        assert await raw("GET", f"{url}/channels/alpha/statements/2025-03-14") == (
            200,
            {
                "channel": "alpha",
                "business_date": "2025-03-14",
                "lines": [
                    {
                        "order_id": "a-1",
                        "status": "succeeded",
                        "amount_minor": AMOUNT,
                        "channel_reference": succeeded["channel_reference"],
                        "business_date": "2025-03-14",
                    }
                ],
            },
        )
        assert await raw("GET", f"{url}/ground-truth") == (
            200,
            {
                "accounts": {
                    "card-1": {
                        "charged_minor": AMOUNT,
                        "refunded_minor": 0,
                        "reversed_minor": 0,
                        "charges": 1,
                    }
                },
                "orders": {
                    "a-1": {"charges": 1, "channel": "alpha"},
                    "b-1": {"charges": 0, "channel": "beta"},
                    "d-1": {"charges": 0, "channel": "delta"},
                    "g-1": {"charges": 0, "channel": "gamma"},
                },
            },
        )
        assert (await raw("GET", f"{url}/health"))[0] == 200

    drive(
        scenario,
        alpha=ChannelBehaviour(),
        beta=ChannelBehaviour(definite_failure=1.0, failure_codes=(("bank_down", True),)),
        gamma=ChannelBehaviour(processing=1.0),
        delta=ChannelBehaviour(timeout_no_effect=1.0, timeout_ms=100),
    )


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/channels/alpha/debits", {"order_id": "order-1"}),
        ("/channels/alpha/debits", {**body("order-1"), "amount_minor": 0}),
        ("/channels/alpha/debits", {**body("order-1"), "amount_minor": "100"}),
        ("/channels/alpha/refunds", {"refund_id": "r-1"}),
        ("/admin/behaviour/alpha", {"definite_failure": 0.7, "processing": 0.7}),
        ("/admin/clock", {"advance_ms": -1}),
    ],
)
def test_bad_bodies_are_refused_with_400(path: str, payload: dict[str, Any]) -> None:
    async def scenario(client: SimulatorClient) -> None:
        status, answer = await raw("POST", client.base_url + path, payload)
        assert (status, answer["error"]) == (400, "bad_request")

    drive(scenario)


def test_a_bad_statement_date_is_refused_with_400() -> None:
    async def scenario(client: SimulatorClient) -> None:
        status, answer = await raw("GET", f"{client.base_url}/channels/alpha/statements/2025-3-1")
        assert (status, answer["error"]) == (400, "bad_request")

    drive(scenario)
