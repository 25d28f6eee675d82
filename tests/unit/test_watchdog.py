"""The lag the stall watchdog and the lag gauge read: right after a rebalance faust's consumer
knows no highwater for a partition yet, and that must not crash the worker."""

from __future__ import annotations

from dataclasses import dataclass

from streams.watchdog import lag_of


@dataclass
class Highwaters:
    value: int | None

    def highwater(self, _tp: object) -> int | None:
        return self.value


def test_a_partition_not_fetched_yet_has_no_lag() -> None:
    assert lag_of(Highwaters(None), "tp", None) == 0
    assert lag_of(Highwaters(None), "tp", 41) == 0


def test_lag_counts_the_records_after_the_last_processed_offset() -> None:
    assert lag_of(Highwaters(50), "tp", 41) == 8  # offsets 42..49
    assert lag_of(Highwaters(50), "tp", None) == 50
    assert lag_of(Highwaters(50), "tp", 49) == 0
    assert lag_of(Highwaters(50), "tp", 60) == 0  # never negative
