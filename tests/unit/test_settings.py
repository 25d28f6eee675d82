"""Settings come in four groups, each field still read from `LEDGER_{FIELD}`."""

from __future__ import annotations

import pytest

from streams.settings import (
    GatewaySettings,
    KafkaSettings,
    LedgerSettings,
    PolicySettings,
    ProcessSettings,
)

GROUPS = (KafkaSettings, ProcessSettings, GatewaySettings, PolicySettings)


def test_every_setting_belongs_to_exactly_one_group() -> None:
    grouped = [name for group in GROUPS for name in group.model_fields]
    assert sorted(grouped) == sorted(LedgerSettings.model_fields)
    assert len(grouped) == len(set(grouped))


def test_each_group_is_read_from_its_ledger_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "LEDGER_PARTITIONS": "3",
        "LEDGER_PROCESSING_GUARANTEE": "exactly_once",
        "LEDGER_POLL_MAX_S": "7",
        "LEDGER_GRACE_DAYS": "1",
    }.items():
        monkeypatch.setenv(name, value)

    settings = LedgerSettings()

    assert (settings.partitions, settings.processing_guarantee) == (3, "exactly_once")
    assert (settings.poll_max_s, settings.grace_days) == (7.0, 1)
    assert LedgerSettings(partitions=5).partitions == 5  # a keyword beats the environment
