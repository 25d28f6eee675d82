"""`ledger replay` and the balance commands' pure part: raw bytes -> balances, no pydantic.

Replaying the whole log is the one path where speed decides whether the command is usable, so
events are decoded with a plain JSON `loads` and their postings folded straight from the dicts,
and only as much of each event is decoded as the fold needs:
- an event with no postings cannot move a balance: the encoder writes it with `"postings":[]`,
  so it is recognised by those bytes and never decoded;
- of the others only the head is decoded: the envelope up to the end of the postings array (the
  first `}]` after `"postings":[`), closed with `}`. Neither string can occur inside a JSON
  string value, where every quote is escaped; and the head parses only if the cut closed a
  top-level value. Anything else (other spacing, other field order) is decoded whole.
A loan's events sit in one partition in seq order; a decider crash can write some of them again
(byte-identical) after the originals. The seq rule (`ledger.sequence`) skips them; since events
without postings are never decoded, the fold sees only some of each loan's seqs and applies the
rule's repeat half (`SeqTracker(partial=True)`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.sequence import SeqTracker, Verdict

POSTINGS_KEY = b'"postings":['
POSTINGS_END = b"}]"

NEXT = Verdict.NEXT
Loads = Callable[[bytes], Any]
Difference = tuple[str, int, int]  # account, replayed balance, published balance
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
OFFSETS = re.compile(r"\d+:\d+(,\d+:\d+)*")


def iso_ms(timestamp_ms: int) -> str:
    """A Kafka timestamp (ms since the epoch) in RFC 3339, UTC."""
    moment = EPOCH + timedelta(milliseconds=timestamp_ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Cut:
    """Where a replay stops: a moment (ms since the epoch) or an offset per partition."""

    text: str
    until_ms: int | None = None
    stops: dict[int, int] | None = None


def parse_cut(text: str) -> Cut:
    """`2026-03-01T09:30:00Z` (RFC 3339, with an offset) or `0:1200,1:980` (partition:offset);
    raises ValueError saying what is wrong."""
    text = text.strip()
    if OFFSETS.fullmatch(text):
        pairs = [pair.split(":") for pair in text.split(",")]
        stops = {int(partition): int(offset) for partition, offset in pairs}
        if len(stops) != len(pairs):
            raise ValueError(f"{text}: a partition is listed twice")
        return Cut(text, stops=stops)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an RFC 3339 time (2026-03-01T09:30:00Z) nor offsets "
            "(0:1200,1:980)"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"{text} has no UTC offset: write e.g. {text}Z or {text}+08:00")
    # Kafka stamps records in whole milliseconds: those at or before the moment are kept.
    return Cut(text, until_ms=(moment - EPOCH) // timedelta(milliseconds=1))


@dataclass
class ReplayFold:
    """Balances (debits minus credits) folded from events, with the counts a summary needs."""

    loads: Loads
    balances: dict[str, int] = field(default_factory=dict)
    currencies: dict[str, str] = field(default_factory=dict)
    seqs: SeqTracker = field(default_factory=lambda: SeqTracker(partial=True))
    events: int = 0
    applied: int = 0
    duplicates: int = 0

    def fold(self, values: Iterable[bytes | None]) -> None:
        """Fold a batch of raw event values, each partition's in log order."""
        # One loop with everything in locals: it runs for every event of the log.
        balances, admit, loads = self.balances, self.seqs.admit, self.loads
        balance, key_length, end_length = balances.get, len(POSTINGS_KEY), len(POSTINGS_END)
        count = applied = duplicates = 0
        for value in values:
            count += 1
            if value is None:
                continue
            at = value.find(POSTINGS_KEY)
            if value.startswith(b"]", at + key_length) and at >= 0:
                continue  # no postings
            head_end = value.find(POSTINGS_END, at) + end_length
            try:
                head = loads(value[:head_end] + b"}")
                loan, seq, postings = head["loan_id"], head["seq"], head["postings"]
            except (ValueError, KeyError):
                loan, seq, postings = self._decode_whole(value)
            if admit(loan, seq) is not NEXT:
                duplicates += 1
                continue
            applied += 1
            accounts = len(balances)
            for posting in postings:
                amount, debit, credit = posting["amount_minor"], posting["debit"], posting["credit"]
                balances[debit] = balance(debit, 0) + amount
                balances[credit] = balance(credit, 0) - amount
            if len(balances) != accounts:
                self._note_currencies(postings)
        self.events += count
        self.applied += applied
        self.duplicates += duplicates

    def _decode_whole(self, value: bytes) -> tuple[str, int, list[dict[str, Any]]]:
        event = self.loads(value)
        return event["loan_id"], event["seq"], event["postings"]

    def _note_currencies(self, postings: list[dict[str, Any]]) -> None:
        for posting in postings:
            self.currencies.setdefault(posting["debit"], posting["currency"])
            self.currencies.setdefault(posting["credit"], posting["currency"])

    @property
    def with_postings(self) -> int:
        """Events that carried postings, repeats included."""
        return self.applied + self.duplicates

    @property
    def total_minor(self) -> int:
        """The sum of every balance: zero, since every posting is balanced."""
        return sum(self.balances.values())

    def summary(self, seconds: float, cut: Cut | None) -> dict[str, Any]:
        return {
            "events": self.events,
            "events_with_postings": self.with_postings,
            "repeats_skipped": self.duplicates,
            "accounts": len(self.balances),
            "seconds": round(seconds, 3),
            "events_per_second": round(self.events / seconds) if seconds > 0 else 0,
            "sum_minor": self.total_minor,
            "until": None if cut is None else cut.text,
        }

    def rows(self) -> list[tuple[str, int, str]]:
        """(account, balance_minor, currency) by account."""
        return [(a, amount, self.currencies[a]) for a, amount in sorted(self.balances.items())]


@dataclass(frozen=True)
class ShardBalance:
    shard: int | None
    balance_minor: int
    as_of_event_id: str
    timestamp_ms: int


@dataclass(frozen=True)
class PublishedBalance:
    """An account's balance on `ledger.balances`: the sum of its shards' latest records."""

    account: str
    currency: str
    shards: tuple[ShardBalance, ...]

    @property
    def balance_minor(self) -> int:
        return sum(shard.balance_minor for shard in self.shards)

    @property
    def as_of_ms(self) -> int:
        """When the newest of its records was written."""
        return max(shard.timestamp_ms for shard in self.shards)

    def as_json(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "balance_minor": self.balance_minor,
            "currency": self.currency,
            "as_of": iso_ms(self.as_of_ms),
            "shards": [
                {
                    "shard": s.shard,
                    "balance_minor": s.balance_minor,
                    "as_of_event_id": s.as_of_event_id,
                }
                for s in self.shards
            ],
        }


BalanceRaw = tuple[bytes | None, bytes | None, int]  # key, value, timestamp_ms


def published_balances(records: Iterable[BalanceRaw], loads: Loads) -> dict[str, PublishedBalance]:
    """Account -> balance from balance records in log order per key (the compacted topic's
    semantics: the latest record per key wins, an empty value deletes the key)."""
    latest: dict[bytes, tuple[bytes, int]] = {}
    for key, value, timestamp_ms in records:
        if key is None:
            continue
        if value is None:
            latest.pop(key, None)
        else:
            latest[key] = (value, timestamp_ms)
    shards: dict[str, list[ShardBalance]] = {}
    currencies: dict[str, str] = {}
    # Only the surviving record of each key is decoded.
    for value, timestamp_ms in latest.values():
        record = loads(value)
        account = record["account"]
        currencies[account] = record["currency"]
        shards.setdefault(account, []).append(
            ShardBalance(
                record.get("shard"), record["balance_minor"], record["as_of_event_id"], timestamp_ms
            )
        )
    return {
        account: PublishedBalance(account, currencies[account], tuple(found))
        for account, found in sorted(shards.items())
    }


def differences(replayed: dict[str, int], published: dict[str, int]) -> list[Difference]:
    """(account, replayed, published) wherever the two disagree; a missing account is 0."""
    accounts = sorted(replayed.keys() | published.keys())
    return [
        (account, replayed.get(account, 0), published.get(account, 0))
        for account in accounts
        if replayed.get(account, 0) != published.get(account, 0)
    ]


def replay_json(
    fold: ReplayFold, summary: dict[str, Any], found: list[Difference] | None
) -> dict[str, Any]:
    """What `ledger replay --json` prints; `found` is None without --verify."""
    balances = [{"account": a, "balance_minor": b, "currency": c} for a, b, c in fold.rows()]
    checked = None
    if found is not None:
        checked = {
            "differences": [
                {"account": a, "replayed_minor": mine, "published_minor": theirs}
                for a, mine, theirs in found
            ]
        }
    return {"summary": summary, "balances": balances, "verify": checked}
