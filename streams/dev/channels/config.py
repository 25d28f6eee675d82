"""How each simulated payment channel behaves: frozen, JSON-loadable, every field documented."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, model_validator

from schemas.base import ChannelName, Identifier, WireModel

Share = Annotated[float, Field(ge=0.0, le=1.0)]
Milliseconds = Annotated[int, Field(ge=0, le=3_600_000)]
FailureCode = tuple[Identifier, bool]
# Float shares are summed, so allow for rounding in the last place (0.1 + 0.2 > 0.3).
SHARE_TOLERANCE = 1e-9
INSUFFICIENT_FUNDS: FailureCode = ("insufficient_funds", False)


class ChannelBehaviour(WireModel):
    """One channel's temperament; the share of debits left over by the outcome shares succeeds."""

    latency_ms: Milliseconds = Field(
        default=0, description="delay before the channel answers a debit, in milliseconds"
    )
    timeout_ms: Milliseconds = Field(
        default=2_000, description="how long a timing-out debit hangs before the HTTP 504"
    )
    processing_ms: Milliseconds = Field(
        default=1_000,
        description="how long after submission a 'processing' debit shows its final outcome",
    )
    definite_failure: Share = Field(
        default=0.0, description="share of debits refused at once with a code from failure_codes"
    )
    processing: Share = Field(
        default=0.0,
        description="share answered 'processing'; the outcome appears after processing_ms",
    )
    timeout_then_debit: Share = Field(
        default=0.0, description="share answered 504 after timeout_ms although the card WAS debited"
    )
    timeout_no_effect: Share = Field(
        default=0.0,
        description="share answered 504 after timeout_ms; the order is recorded as failed",
    )
    lost_in_transit: Share = Field(
        default=0.0,
        description="share of FIRST submissions answered 504 at once and never recorded",
    )
    failure_codes: tuple[FailureCode, ...] = Field(
        default=(("channel_unavailable", True), INSUFFICIENT_FUNDS),
        min_length=1,
        description="(code, retriable) pairs that definite failures draw from",
    )
    insufficient_funds_accounts: frozenset[Identifier] = Field(
        default=frozenset(),
        description="account_refs whose debits always fail with insufficient_funds",
    )
    cross_midnight: Share = Field(
        default=0.0, description="share of successes booked in the statement of business_date + 1"
    )
    reversed_later: Share = Field(
        default=0.0,
        description="share of successes the statement shows 'reversed' (money back on the card)",
    )
    double_debit: Share = Field(
        default=0.0,
        description="share of successes charged twice: an extra statement line, another reference",
    )
    fail_everything: bool = Field(
        default=False, description="every new debit fails at once (a channel outage)"
    )
    never_answer: bool = Field(
        default=False,
        description="debits and queries hang until the client gives up; nothing is recorded",
    )

    @model_validator(mode="after")
    def _outcome_shares_fit(self) -> Self:
        if sum(self.outcome_shares()) > 1.0 + SHARE_TOLERANCE:
            raise ValueError("the outcome shares must sum to at most 1 (the rest succeeds)")
        return self

    def outcome_shares(self) -> tuple[float, ...]:
        """The shares that decide a debit's fate, in the order the dice are read."""
        return (
            self.definite_failure,
            self.processing,
            self.timeout_then_debit,
            self.timeout_no_effect,
            self.lost_in_transit,
        )


class SimulatorConfig(WireModel):
    """Every channel the simulator serves, and the seed all of their dice derive from."""

    seed: int = Field(description="fates derive from (seed, channel, order id, purpose) only")
    channels: dict[ChannelName, ChannelBehaviour] = Field(
        description="channel name -> behaviour; the name appears in the URL paths"
    )


def load_config(path: Path) -> SimulatorConfig:
    """Read a SimulatorConfig from a JSON file."""
    return SimulatorConfig.model_validate_json(path.read_bytes())


def default_config(seed: int) -> SimulatorConfig:
    """alpha: mostly succeeds, some timeouts; beta: the reliable backup; gamma: asynchronous."""
    alpha = ChannelBehaviour(
        latency_ms=20,
        timeout_ms=1_000,
        definite_failure=0.05,
        timeout_then_debit=0.03,
        timeout_no_effect=0.02,
        lost_in_transit=0.01,
        cross_midnight=0.02,
        reversed_later=0.005,
        double_debit=0.005,
    )
    beta = ChannelBehaviour(latency_ms=10, definite_failure=0.01, cross_midnight=0.01)
    gamma = ChannelBehaviour(
        latency_ms=30, processing_ms=2_000, definite_failure=0.02, processing=0.9
    )
    return SimulatorConfig(seed=seed, channels={"alpha": alpha, "beta": beta, "gamma": gamma})
