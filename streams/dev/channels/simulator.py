"""The channels' deterministic core: hashed dice decide each order's fate; time is an input."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from typing import Literal

from pydantic import Field

from schemas.base import ChannelName, WireModel
from schemas.channel import (
    DebitAnswer,
    DebitFailed,
    DebitNotFound,
    DebitProcessing,
    DebitRequest,
    DebitSucceeded,
    RefundAnswer,
    RefundRequest,
    Statement,
    StatementLine,
)
from streams.dev.channels.config import (
    INSUFFICIENT_FUNDS,
    ChannelBehaviour,
    FailureCode,
    SimulatorConfig,
)
from streams.errors import LedgerError

# ---- the simulator's own wire (admin and ground truth; the channel wire is schemas.channel) ---


class ClockAdvance(WireModel):
    advance_ms: int = Field(ge=0, le=10**12)


class AccountTruth(WireModel):
    charged_minor: int = Field(default=0, ge=0)
    refunded_minor: int = Field(default=0, ge=0)
    reversed_minor: int = Field(default=0, ge=0)
    charges: int = Field(default=0, ge=0)


class OrderTruth(WireModel):
    charges: int = Field(ge=0)
    channel: ChannelName


class GroundTruth(WireModel):
    """What really happened to every card, whatever the channels told anyone."""

    accounts: dict[str, AccountTruth]
    orders: dict[str, OrderTruth]


# ---- the dice --------------------------------------------------------------------------------


class Fate(StrEnum):
    SUCCEEDED = "succeeded"
    DEFINITE_FAILURE = "definite_failure"
    PROCESSING = "processing"
    TIMEOUT_THEN_DEBIT = "timeout_then_debit"
    TIMEOUT_NO_EFFECT = "timeout_no_effect"
    LOST_IN_TRANSIT = "lost_in_transit"


# In the order of ChannelBehaviour.outcome_shares(); whatever they leave over succeeds.
SHARED_FATES = (
    Fate.DEFINITE_FAILURE,
    Fate.PROCESSING,
    Fate.TIMEOUT_THEN_DEBIT,
    Fate.TIMEOUT_NO_EFFECT,
    Fate.LOST_IN_TRANSIT,
)


def _digest(seed: int, channel: str, key: str, purpose: str) -> bytes:
    # Hashing the whole identity, not a shared generator, makes a fate independent of arrival order.
    material = "\x1f".join((str(seed), channel, key, purpose)).encode()
    return hashlib.sha256(material).digest()


def roll(seed: int, channel: str, key: str, purpose: str) -> float:
    """A uniform number in [0, 1) that depends on its four inputs only."""
    return int.from_bytes(_digest(seed, channel, key, purpose)[:8], "big") / 2**64


def reference(seed: int, channel: str, key: str, purpose: str) -> str:
    """A channel reference, stable for the same inputs."""
    return f"{channel}-{_digest(seed, channel, key, purpose).hex()[:20]}"


def pick_fate(shares: Iterable[float], dice: float) -> Fate:
    """The fate whose slice of [0, 1) holds `dice`; the rest of the interval succeeds."""
    ceiling = 0.0
    for fate, share in zip(SHARED_FATES, shares, strict=True):
        ceiling += share
        if dice < ceiling:
            return fate
    return Fate.SUCCEEDED


# ---- the simulator ---------------------------------------------------------------------------


class UnknownChannelError(LedgerError):
    """A request named a channel the simulator does not serve."""


@dataclass(frozen=True)
class Reply:
    """What the server does: wait `wait_ms`, then send `answer` (None: an HTTP 504)."""

    answer: DebitAnswer | None
    wait_ms: int = 0
    # Hold the request until the client gives up (or the server stops), then answer 504.
    hang: bool = False


@dataclass(frozen=True)
class Order:
    """A debit the channel recorded; its outcome is fixed when it arrives, visible later."""

    channel: str
    request: DebitRequest
    outcome: DebitSucceeded | DebitFailed
    visible_at_s: float
    cross_midnight: bool = False
    reversed_later: bool = False
    duplicate_reference: str | None = None


class Simulator:
    """Every channel's orders and refunds; no I/O, and the only clock is the injected one."""

    def __init__(self, config: SimulatorConfig, clock: Callable[[], float]) -> None:
        self._seed = config.seed
        self._behaviours = dict(config.channels)
        self._clock = clock
        self._advanced_s = 0.0
        self._orders: dict[tuple[str, str], Order] = {}
        self._lost: set[tuple[str, str]] = set()
        self._refunds: dict[tuple[str, str], tuple[RefundRequest, RefundAnswer]] = {}

    def now_s(self) -> float:
        return self._clock() + self._advanced_s

    def advance_clock(self, advance_ms: int) -> None:
        self._advanced_s += advance_ms / 1000

    def behaviour(self, channel: str) -> ChannelBehaviour:
        try:
            return self._behaviours[channel]
        except KeyError:
            known = sorted(self._behaviours)
            raise UnknownChannelError(f"no channel {channel!r}: use one of {known}") from None

    def set_behaviour(self, channel: str, behaviour: ChannelBehaviour) -> None:
        """Replace a channel's behaviour (or add a channel); recorded orders keep their fate."""
        self._behaviours[channel] = behaviour

    def submit(self, channel: str, request: DebitRequest) -> Reply:
        behaviour = self.behaviour(channel)
        key = (channel, request.order_id)
        if behaviour.never_answer:
            return Reply(None, hang=True)
        known = self._orders.get(key)
        if known is not None:
            return Reply(self._visible(known), behaviour.latency_ms)
        fate = self._fate(channel, behaviour, request)
        if fate is Fate.LOST_IN_TRANSIT:
            self._lost.add(key)
            return Reply(None)
        order = self._orders[key] = self._record(channel, behaviour, request, fate)
        if fate in (Fate.TIMEOUT_THEN_DEBIT, Fate.TIMEOUT_NO_EFFECT):
            return Reply(None, behaviour.timeout_ms)
        return Reply(self._visible(order), behaviour.latency_ms)

    def query(self, channel: str, order_id: str) -> Reply:
        if self.behaviour(channel).never_answer:
            return Reply(None, hang=True)
        order = self._orders.get((channel, order_id))
        if order is None:
            return Reply(DebitNotFound(order_id=order_id))
        return Reply(self._visible(order))

    def refund(self, channel: str, request: RefundRequest) -> RefundAnswer:
        self.behaviour(channel)
        key = (channel, request.refund_id)
        if key not in self._refunds:
            made = reference(self._seed, channel, request.refund_id, "refund")
            answer = RefundAnswer(refund_id=request.refund_id, channel_reference=made)
            self._refunds[key] = (request, answer)
        return self._refunds[key][1]

    def statement(self, channel: str, business_date: date) -> Statement:
        self.behaviour(channel)
        now = self.now_s()
        lines = [
            line
            for (owner, _), order in self._orders.items()
            if owner == channel and _charges(order, now) > 0
            for line in _statement_lines(order)
            if line.business_date == business_date
        ]
        lines.sort(key=lambda line: line.order_id)  # stable: the original line stays first
        return Statement(channel=channel, business_date=business_date, lines=tuple(lines))

    def ground_truth(self) -> GroundTruth:
        now = self.now_s()
        accounts: dict[str, AccountTruth] = {}
        orders: dict[str, OrderTruth] = {}
        for (channel, order_id), order in sorted(self._orders.items()):
            charges = _charges(order, now)
            orders[order_id] = _merge_order(orders.get(order_id), charges, channel)
            account = order.request.account_ref
            accounts[account] = _add(accounts.get(account), _account_effect(order, charges))
        for request, _ in self._refunds.values():
            refunded = AccountTruth(refunded_minor=request.amount_minor)
            accounts[request.account_ref] = _add(accounts.get(request.account_ref), refunded)
        return GroundTruth(accounts=accounts, orders=orders)

    def _fate(self, channel: str, behaviour: ChannelBehaviour, request: DebitRequest) -> Fate:
        if (
            behaviour.fail_everything
            or request.account_ref in behaviour.insufficient_funds_accounts
        ):
            return Fate.DEFINITE_FAILURE
        shares = behaviour.outcome_shares()
        if (channel, request.order_id) not in self._lost:
            return pick_fate(shares, self._roll(channel, request.order_id, "fate"))
        # A resubmission after a loss: fresh dice, and it cannot be lost again.
        return pick_fate((*shares[:-1], 0.0), self._roll(channel, request.order_id, "refate"))

    def _record(
        self, channel: str, behaviour: ChannelBehaviour, request: DebitRequest, fate: Fate
    ) -> Order:
        now = self.now_s()
        if fate in (Fate.DEFINITE_FAILURE, Fate.TIMEOUT_NO_EFFECT):
            return Order(channel, request, self._failure(channel, behaviour, request), now)
        if fate is Fate.PROCESSING:
            now += behaviour.processing_ms / 1000
            if self._processing_fails(channel, behaviour, request.order_id):
                return Order(channel, request, self._failure(channel, behaviour, request), now)
        return self._success(channel, behaviour, request, now)

    def _success(
        self, channel: str, behaviour: ChannelBehaviour, request: DebitRequest, visible_at_s: float
    ) -> Order:
        order_id = request.order_id
        made = reference(self._seed, channel, order_id, "reference")
        twice = self._roll(channel, order_id, "double_debit") < behaviour.double_debit
        return Order(
            channel=channel,
            request=request,
            outcome=DebitSucceeded(
                order_id=order_id, channel_reference=made, amount_minor=request.amount_minor
            ),
            visible_at_s=visible_at_s,
            cross_midnight=self._roll(channel, order_id, "cross_midnight")
            < behaviour.cross_midnight,
            reversed_later=self._roll(channel, order_id, "reversed_later")
            < behaviour.reversed_later,
            duplicate_reference=reference(self._seed, channel, order_id, "again")
            if twice
            else None,
        )

    def _failure(
        self, channel: str, behaviour: ChannelBehaviour, request: DebitRequest
    ) -> DebitFailed:
        code: FailureCode = INSUFFICIENT_FUNDS
        if request.account_ref not in behaviour.insufficient_funds_accounts:
            codes = behaviour.failure_codes
            code = codes[int(self._roll(channel, request.order_id, "code") * len(codes))]
        return DebitFailed(order_id=request.order_id, code=code[0], retriable=code[1])

    def _processing_fails(self, channel: str, behaviour: ChannelBehaviour, order_id: str) -> bool:
        # A processing order ends the way a synchronous one would: failures keep their odds
        # against the successes, the other fates do not apply.
        succeeding = max(0.0, 1.0 - sum(behaviour.outcome_shares()))
        failing = behaviour.definite_failure
        if failing + succeeding == 0.0:
            return False
        return self._roll(channel, order_id, "processing_outcome") < failing / (
            failing + succeeding
        )

    def _roll(self, channel: str, order_id: str, purpose: str) -> float:
        return roll(self._seed, channel, order_id, purpose)

    def _visible(self, order: Order) -> DebitAnswer:
        if self.now_s() < order.visible_at_s:
            return DebitProcessing(order_id=order.request.order_id)
        return order.outcome


def _charges(order: Order, now_s: float) -> int:
    """How many times the card was charged for the order by `now_s`."""
    if not isinstance(order.outcome, DebitSucceeded) or now_s < order.visible_at_s:
        return 0
    return 1 if order.duplicate_reference is None else 2


def _statement_lines(order: Order) -> tuple[StatementLine, ...]:
    assert isinstance(order.outcome, DebitSucceeded), "only successes reach a statement"
    booked = order.request.business_date + timedelta(days=1 if order.cross_midnight else 0)
    status: Literal["succeeded", "reversed"] = "reversed" if order.reversed_later else "succeeded"
    first = StatementLine(
        order_id=order.request.order_id,
        status=status,
        amount_minor=order.request.amount_minor,
        channel_reference=order.outcome.channel_reference,
        business_date=booked,
    )
    if order.duplicate_reference is None:
        return (first,)
    again = first.model_copy(
        update={"status": "succeeded", "channel_reference": order.duplicate_reference}
    )
    return first, again


def _account_effect(order: Order, charges: int) -> AccountTruth:
    amount = order.request.amount_minor
    reversed_minor = amount if charges > 0 and order.reversed_later else 0
    return AccountTruth(
        charged_minor=amount * charges, reversed_minor=reversed_minor, charges=charges
    )


def _add(total: AccountTruth | None, effect: AccountTruth) -> AccountTruth:
    if total is None:
        return effect
    return AccountTruth(
        charged_minor=total.charged_minor + effect.charged_minor,
        refunded_minor=total.refunded_minor + effect.refunded_minor,
        reversed_minor=total.reversed_minor + effect.reversed_minor,
        charges=total.charges + effect.charges,
    )


def _merge_order(seen: OrderTruth | None, charges: int, channel: str) -> OrderTruth:
    # Order ids are unique per channel only; if two channels share one, name the one that charged.
    if seen is None:
        return OrderTruth(charges=charges, channel=channel)
    named = seen.channel if seen.charges > 0 or charges == 0 else channel
    return OrderTruth(charges=seen.charges + charges, channel=named)
