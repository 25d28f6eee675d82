"""An async client for a payment channel's HTTP API (`schemas.channel`): answers as models,
trouble as errors. The channel simulator serves the same API in development."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from typing import Self, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from schemas.channel import (
    DEBIT_ANSWER,
    DebitAnswer,
    DebitRequest,
    RefundAnswer,
    RefundRequest,
    Statement,
)
from streams.errors import LedgerError

T = TypeVar("T")
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class ChannelError(LedgerError):
    """The channel gave no usable answer; for a debit the outcome is unknown until queried."""


# The three names below are the gateway's vocabulary, hence no "Error" suffix.
class ChannelTimeout(ChannelError):  # noqa: N818
    """No answer in time (or the channel said 504): the debit may or may not have happened."""


class ChannelUnreachable(ChannelError):  # noqa: N818
    """The connection failed: the request probably never reached the channel."""


class ChannelRejected(ChannelError):  # noqa: N818
    """The channel refused the request itself (HTTP 4xx): a bug on the caller's side."""


class ChannelClient:
    """One HTTP session to the channels; use `async with` or call `close()`."""

    def __init__(self, base_url: str, timeout_s: float) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    @property
    def base_url(self) -> str:
        return self._base_url

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def debit(self, channel: str, request: DebitRequest) -> DebitAnswer:
        payload = await self._call("POST", f"/channels/{channel}/debits", request)
        return parse_answer(DEBIT_ANSWER.validate_json, payload)

    async def query(self, channel: str, order_id: str) -> DebitAnswer:
        """The order's state; a DebitNotFound when the channel never recorded it."""
        path = f"/channels/{channel}/debits/{order_id}"
        payload = await self._call("GET", path, accepted=(200, 404))
        return parse_answer(DEBIT_ANSWER.validate_json, payload)

    async def refund(self, channel: str, request: RefundRequest) -> RefundAnswer:
        payload = await self._call("POST", f"/channels/{channel}/refunds", request)
        return parse_answer(RefundAnswer.model_validate_json, payload)

    async def statement(self, channel: str, business_date: date) -> Statement:
        path = f"/channels/{channel}/statements/{business_date.isoformat()}"
        return parse_answer(Statement.model_validate_json, await self._call("GET", path))

    async def health(self) -> bool:
        await self._call("GET", "/health")
        return True

    async def _call(
        self,
        method: str,
        path: str,
        body: BaseModel | None = None,
        accepted: tuple[int, ...] = (200,),
    ) -> bytes:
        data = None if body is None else body.model_dump_json()
        url = self._base_url + path
        try:
            async with self._open().request(method, url, data=data, headers=JSON_HEADERS) as answer:
                payload = await answer.read()
        except TimeoutError as error:
            raise ChannelTimeout(
                f"{method} {url}: no answer within {self._timeout_s} s; query the order"
            ) from error
        except aiohttp.ClientConnectionError as error:
            raise ChannelUnreachable(
                f"{method} {url}: {error}; check that the channel runs at {self._base_url}"
            ) from error
        return _accept(f"{method} {url}", answer.status, payload, accepted)

    def _open(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running event loop, as aiohttp requires.
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self._timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session


def _accept(call: str, status: int, payload: bytes, accepted: tuple[int, ...]) -> bytes:
    if status == 504:
        raise ChannelTimeout(f"{call}: the channel timed out (504); query the order")
    if status in accepted and not _is_error(payload):
        return payload
    text = payload.decode(errors="replace")[:500]
    if 400 <= status < 500:
        raise ChannelRejected(f"{call}: refused with {status} {text}; fix the request")
    raise ChannelError(f"{call}: unexpected {status} {text}; the outcome is unknown, query it")


def _is_error(payload: bytes) -> bool:
    try:
        decoded = json.loads(payload)
    except ValueError:
        return True
    return isinstance(decoded, dict) and "error" in decoded


def parse_answer(validate: Callable[[bytes], T], payload: bytes) -> T:
    try:
        return validate(payload)
    except ValidationError as error:
        message = f"the channel answered an unknown shape ({error}); compare client and server"
        raise ChannelError(message) from error
