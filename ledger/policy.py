"""Business policy given as data: routing between channels, grace period and late-fee rule."""

from dataclasses import dataclass

from ledger.money import BPS_PER_UNIT, divide_round_half_up


@dataclass(frozen=True, slots=True)
class Policy:
    """Passed to `decide`; the same policy and the same command always give the same events.

    Routing: the first attempt goes to `channels[0]`; after a definite, retriable failure on
    `channels[i]` the next attempt goes to `channels[i + 1]`; there is no retry past the last.

    Business dates: a `CloseBusinessDay` (or a partition's tick) more than `max_days_ahead`
    days after the latest business day it knows is refused (`business_date_too_far_ahead`):
    one forged far-future date would otherwise make everything fall due at once.

    Late fee rule: once per installment, on the first business day closed more than `grace_days`
    after its due date while principal or interest is still owed and no attempt for it is in
    flight (a borrower whose debit the channel is still processing is not charged for its
    delay: if the attempt fails, the next close assesses the fee), the fee is
    max(late_fee_min_minor, round_half_up(owed principal and interest * late_fee_bps / 10_000)).
    """

    channels: tuple[str, ...] = ("alpha", "beta")
    grace_days: int = 3
    late_fee_bps: int = 500
    late_fee_min_minor: int = 1_000
    auto_debit: bool = True
    max_days_ahead: int = 31

    def __post_init__(self) -> None:
        assert self.channels, "a routing policy needs at least one channel"
        assert self.grace_days >= 0, "grace_days must not be negative"
        assert self.late_fee_bps >= 0, "late_fee_bps must not be negative"
        assert self.late_fee_min_minor >= 0, "late_fee_min_minor must not be negative"
        assert self.max_days_ahead >= 1, "max_days_ahead must be at least one day"

    def backup_after(self, channel: str) -> str | None:
        """The channel to try after a retriable failure on `channel`, if any."""
        if channel not in self.channels:
            return None
        position = self.channels.index(channel)
        return self.channels[position + 1] if position + 1 < len(self.channels) else None

    def late_fee_minor(self, owed_minor: int) -> int:
        return max(
            self.late_fee_min_minor,
            divide_round_half_up(owed_minor * self.late_fee_bps, BPS_PER_UNIT),
        )


DEFAULT_POLICY = Policy()
