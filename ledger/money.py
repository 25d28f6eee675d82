"""Integer minor-unit money arithmetic and the ledger's one rounding rule."""

from fractions import Fraction

__all__ = ["BPS_PER_UNIT", "divide_round_half_up", "round_half_up", "split_evenly"]

BPS_PER_UNIT = 10_000


def round_half_up(value: Fraction) -> int:
    """Round an exact amount to the nearest minor unit, halves away from zero.

    0.5 fen -> 1 fen, -0.5 fen -> -1 fen, 1.4999 fen -> 1 fen.
    """
    magnitude = abs(value)
    # floor(|v| + 1/2) rounds halves up in magnitude; the sign is restored after.
    rounded = (magnitude.numerator * 2 + magnitude.denominator) // (magnitude.denominator * 2)
    return rounded if value >= 0 else -rounded


def divide_round_half_up(numerator: int, denominator: int) -> int:
    """Return numerator / denominator exactly, rounded by `round_half_up` (halves away from zero).

    The denominator must be positive. Integers only (no Fraction): schedules call it per row.
    """
    assert denominator > 0, f"denominator must be positive, got {denominator}"
    rounded = (abs(numerator) * 2 + denominator) // (denominator * 2)
    return rounded if numerator >= 0 else -rounded


def split_evenly(total_minor: int, parts: int) -> list[int]:
    """Split a total into `parts` amounts, each `total_minor // parts`.

    The LAST part absorbs the remainder, so the parts always sum exactly to `total_minor`.
    """
    assert parts >= 1, f"parts must be at least 1, got {parts}"
    share = total_minor // parts
    return [share] * (parts - 1) + [total_minor - share * (parts - 1)]
