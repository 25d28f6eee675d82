"""The simulated channels over HTTP: `make_app(config)` and `run_server(host, port, config)`."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas.base import ChannelName
from schemas.channel import DebitNotFound, DebitRequest, RefundRequest
from streams.dev.channels.config import (
    ChannelBehaviour,
    SimulatorConfig,
    default_config,
    load_config,
)
from streams.dev.channels.simulator import ClockAdvance, Reply, Simulator, UnknownChannelError

CHANNEL_NAME: TypeAdapter[str] = TypeAdapter(ChannelName)
BUSINESS_DATE: TypeAdapter[date] = TypeAdapter(date)


class Hangers:
    """Requests a never-answering channel holds: released when it recovers or the server stops."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    async def hang(self, channel: str) -> None:
        await self._events.setdefault(channel, asyncio.Event()).wait()

    def release(self, channel: str) -> None:
        event = self._events.pop(channel, None)
        if event is not None:
            event.set()

    def release_all(self) -> None:
        for channel in list(self._events):
            self.release(channel)


SIMULATOR = web.AppKey("simulator", Simulator)
HANGERS = web.AppKey("hangers", Hangers)


def make_app(
    config: SimulatorConfig, clock: Callable[[], float] = time.monotonic
) -> web.Application:
    """A fresh application with its own simulator; nothing is shared between two apps."""
    app = web.Application(middlewares=[_errors])
    app[SIMULATOR] = Simulator(config, clock)
    app[HANGERS] = Hangers()
    app.on_shutdown.append(_release_hangers)
    app.add_routes(
        [
            web.post("/channels/{channel}/debits", _submit_debit),
            web.get("/channels/{channel}/debits/{order_id}", _query_debit),
            web.post("/channels/{channel}/refunds", _refund),
            web.get("/channels/{channel}/statements/{business_date}", _statement),
            web.get("/ground-truth", _ground_truth),
            web.post("/admin/behaviour/{channel}", _set_behaviour),
            web.post("/admin/clock", _advance_clock),
            web.get("/health", _health),
        ]
    )
    return app


def run_server(host: str, port: int, config: SimulatorConfig) -> None:
    """Serve until interrupted (blocks)."""
    web.run_app(make_app(config), host=host, port=port)


# ---- handlers ----------------------------------------------------------------------------


async def _submit_debit(request: web.Request) -> web.Response:
    simulator, channel = _channel(request)
    body = DebitRequest.model_validate_json(await request.read())
    return await _follow(request.app, channel, simulator.submit(channel, body))


async def _query_debit(request: web.Request) -> web.Response:
    simulator, channel = _channel(request)
    reply = simulator.query(channel, request.match_info["order_id"])
    return await _follow(request.app, channel, reply)


async def _refund(request: web.Request) -> web.Response:
    simulator, channel = _channel(request)
    body = RefundRequest.model_validate_json(await request.read())
    return _json(simulator.refund(channel, body))


async def _statement(request: web.Request) -> web.Response:
    simulator, channel = _channel(request)
    business_date = BUSINESS_DATE.validate_strings(request.match_info["business_date"])
    return _json(simulator.statement(channel, business_date))


async def _ground_truth(request: web.Request) -> web.Response:
    return _json(request.app[SIMULATOR].ground_truth())


async def _set_behaviour(request: web.Request) -> web.Response:
    channel = CHANNEL_NAME.validate_python(request.match_info["channel"])
    behaviour = ChannelBehaviour.model_validate_json(await request.read())
    request.app[SIMULATOR].set_behaviour(channel, behaviour)
    if not behaviour.never_answer:
        # The channel recovered: whoever it kept waiting finally hears a timeout.
        request.app[HANGERS].release(channel)
    return _json(behaviour)


async def _advance_clock(request: web.Request) -> web.Response:
    body = ClockAdvance.model_validate_json(await request.read())
    request.app[SIMULATOR].advance_clock(body.advance_ms)
    return _json(body)


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


# ---- plumbing ----------------------------------------------------------------------------


def _channel(request: web.Request) -> tuple[Simulator, str]:
    """The simulator and the channel named in the path, refused (404) if unknown."""
    simulator = request.app[SIMULATOR]
    channel = request.match_info["channel"]
    simulator.behaviour(channel)
    return simulator, channel


async def _follow(app: web.Application, channel: str, reply: Reply) -> web.Response:
    """Carry out the simulator's plan: wait, hang or answer."""
    if reply.hang:
        await app[HANGERS].hang(channel)
        return _timeout()
    await asyncio.sleep(reply.wait_ms / 1000)
    if reply.answer is None:
        return _timeout()
    return _json(reply.answer, status=404 if isinstance(reply.answer, DebitNotFound) else 200)


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        body=model.model_dump_json().encode(), status=status, content_type="application/json"
    )


def _timeout() -> web.Response:
    return web.json_response({"error": "timeout"}, status=504)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except UnknownChannelError as error:
        return web.json_response({"error": "unknown_channel", "detail": str(error)}, status=404)
    except ValidationError as error:
        detail = error.errors(include_url=False, include_context=False, include_input=False)
        return web.json_response({"error": "bad_request", "detail": detail}, status=400)


async def _release_hangers(app: web.Application) -> None:
    # Without this, a stopping server would wait its whole shutdown timeout for hung requests.
    app[HANGERS].release_all()


def main() -> None:
    """`python -m streams.dev.channels.server [--config FILE | --seed N] [--host H] [--port P]`."""
    parser = argparse.ArgumentParser(
        description="Serve the simulated payment channels over HTTP: the channel wire "
        "(schemas/channel.py) and an admin API (/admin/behaviour, /admin/clock, /ground-truth), "
        "all described in docs/simulator.md."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8700)
    parser.add_argument(
        "--config",
        type=Path,
        help="a JSON file of channels and their behaviour (format: docs/simulator.md)",
    )
    parser.add_argument("--seed", type=int, default=7, help="for the default config")
    arguments = parser.parse_args()
    config = load_config(arguments.config) if arguments.config else default_config(arguments.seed)
    print(f"channels {', '.join(config.channels)} on http://{arguments.host}:{arguments.port}")
    run_server(arguments.host, arguments.port, config)


if __name__ == "__main__":
    main()
