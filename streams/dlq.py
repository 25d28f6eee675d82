"""Dead letters: the original bytes, with why and where from in the headers."""

from __future__ import annotations


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
