"""Dead letters: the original bytes, with why and where from in the headers."""

from __future__ import annotations

from typing import Any

DLQ_HEADERS = ("error", "source_topic", "source_partition", "source_offset")


def dead_letter_headers(
    error: str, topic: str, partition: int, offset: int
) -> list[tuple[str, str | bytes | None]]:
    # Bounded: a header must never be what makes the dead letter itself too large.
    return [
        ("error", error[:1000].encode()),
        ("source_topic", topic.encode()),
        ("source_partition", str(partition).encode()),
        ("source_offset", str(offset).encode()),
    ]


async def send_dead_letter(
    dlq_topic: Any,
    key: bytes | None,
    value: bytes | None,
    error: str,
    topic: str,
    partition: int,
    offset: int,
) -> None:
    """Send to the DLQ partition with the source's number and wait until the broker has it."""
    future = await dlq_topic.send(
        key=key,
        value=value,
        partition=partition,
        headers=dead_letter_headers(error, topic, partition, offset),
    )
    await future
