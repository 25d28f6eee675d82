"""Logging for every process, configured once at its start from LEDGER_LOG_LEVEL."""

from __future__ import annotations

import logging

from streams.settings import LedgerSettings

LEVELS = {
    "crit": logging.CRITICAL,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}
FORMAT = "%(asctime)s %(levelname)s %(threadName)s %(name)s %(message)s"


def configure_logging(settings: LedgerSettings) -> None:
    """Lines on stderr at the configured level. librdkafka logs every reconnect attempt while a
    broker is away: below debug, only its errors are kept."""
    level = LEVELS[settings.log_level]
    logging.basicConfig(level=level, format=FORMAT, force=True)
    logging.getLogger("librdkafka").setLevel(level if level <= logging.DEBUG else logging.ERROR)
