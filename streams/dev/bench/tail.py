"""Follow a running pipeline's output topics: outcomes counted, events folded, balances kept.

One read_committed consumer tails `ledger.outcomes`, `ledger.events` and `ledger.balances` from
their beginning, so a benchmark can wait for "every outcome out" and "the balances topic equals
an independent fold of the log" without re-reading the topics each time.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message
from confluent_kafka import TopicPartition as Partition

from ledger.replay import ReplayFold, differences
from schemas.topics import BALANCES, EVENTS, OUTCOMES
from streams.errors import LedgerError
from streams.logread import READER_CONFIG
from streams.settings import LedgerSettings

SUCCEEDED = b'"type":"DeductionSucceeded"'
HOT_ACCOUNT = "channel:alpha:clearing"


class Tail:
    def __init__(self, settings: LedgerSettings) -> None:
        self._names = {
            settings.topic(spec.name): spec.name for spec in (OUTCOMES, EVENTS, BALANCES)
        }
        self._consumer = Consumer(
            settings.confluent_config()
            | READER_CONFIG
            | {"group.id": f"{settings.group_id}-bench-tail", "fetch.wait.max.ms": 20}
        )
        self._consumer.assign(
            [
                Partition(topic, p, OFFSET_BEGINNING)
                for topic in self._names
                for p in range(settings.partitions)
            ]
        )
        self.outcomes = 0
        self.succeeded = 0
        self.fold = ReplayFold(loads=orjson.loads)
        self.published: dict[bytes, tuple[str, int]] = {}  # key -> (account, balance_minor)
        self.updates: Counter[bytes] = Counter()  # balance records per key

    def poll(self, timeout_s: float = 0.1) -> bool:
        """Take what arrived; True if a balance record was among it."""
        by_topic: dict[str, list[Message]] = {}
        for message in self._consumer.consume(10_000, timeout=timeout_s):
            if message.error() is None:
                by_topic.setdefault(self._names[message.topic() or ""], []).append(message)
        self.outcomes += len(by_topic.get(OUTCOMES.name, ()))
        events = [m.value() or b"" for m in by_topic.get(EVENTS.name, ())]
        self.fold.fold(events)
        self.succeeded += sum(1 for value in events if SUCCEEDED in value)
        for message in by_topic.get(BALANCES.name, ()):
            self._keep_balance(message)
        return BALANCES.name in by_topic

    def _keep_balance(self, message: Message) -> None:
        key, value = message.key() or b"", message.value()
        self.updates[key] += 1
        if value is None:
            self.published.pop(key, None)
            return
        record = orjson.loads(value)
        self.published[key] = (record["account"], record["balance_minor"])

    def balanced(self) -> bool:
        """ledger.balances (shards summed) equals the fold of ledger.events read so far."""
        summed: dict[str, int] = {}
        for account, balance in self.published.values():
            summed[account] = summed.get(account, 0) + balance
        return self.fold.applied > 0 and not differences(self.fold.balances, summed)

    def hot_shards(self, since: Counter[bytes] | None = None) -> dict[str, int]:
        """Balance records of the hot shared account per shard (= events partition), those
        counted in `since` (an earlier copy of `updates`) left out."""
        prefix = f"{HOT_ACCOUNT}@".encode()
        counted = self.updates - (since or Counter())
        found = {k.decode(): n for k, n in counted.items() if k.startswith(prefix)}
        return dict(sorted(found.items(), key=lambda item: int(item[0].rsplit("@", 1)[1])))

    def wait(
        self, done: Callable[[], bool], timeout_s: float, alive: Callable[[], None]
    ) -> float | None:
        """Poll until `done()`; return the monotonic time it became true, None on timeout."""
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                return None
            alive()
            self.poll()
        return time.monotonic()

    def wait_settled(
        self, events: int, timeout_s: float, alive: Callable[[], None]
    ) -> float | None:
        """Poll until `events` events are read and the balances equal their fold; return the
        monotonic time that held first, None on timeout. (Before every event is read, equality
        could be a moment where the projector is exactly as far as this reader.)"""
        return self.wait(lambda: self.fold.events >= events and self.balanced(), timeout_s, alive)

    def close(self) -> None:
        self._consumer.close()


def require(found: float | None, what: str) -> float:
    if found is None:
        raise LedgerError(f"timed out waiting for {what}")
    return found
