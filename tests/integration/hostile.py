"""Hostile input: malformed and adversarial records, each with the fate the decider must give it.

Every record has its own command id (where it has one at all), so its outcome can be matched
exactly; its fate says which dead-letter error class it gets (the `error` header up to the first
colon) and which outcome status or reason answers it, if any.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas.commands import OpenLoan
from tests.support.builders import open_loan, request

MAX_BYTES = 64 * 1024  # LEDGER_MAX_MESSAGE_BYTES' default


@dataclass(frozen=True)
class Hostile:
    kind: str
    key: bytes | None
    value: bytes
    dead_letter: str | None  # "invalid", "oversize", "misrouted", or None (not dead-lettered)
    command_id: str | None  # the id an outcome answers, when the record has a readable one
    outcome: str | None  # the outcome's reason, or status when accepted/duplicate


def _valid_document(n: int, loan_id: str) -> dict[str, Any]:
    command = request(f"h-{n}", loan_id=loan_id)
    document: dict[str, Any] = json.loads(command.model_dump_json())
    document["amount_minor"] = 10_000
    return document


def _answered(kind: str, n: int, loan_id: str, change: Callable[[dict[str, Any]], None]) -> Hostile:
    """A command whose ids are readable but which breaks the schema: dead-lettered and
    answered `invalid_command`."""
    document = _valid_document(n, loan_id)
    change(document)
    value = json.dumps(document).encode()
    return Hostile(kind, loan_id.encode(), value, "invalid", f"h-{n}", "invalid_command")


def _unanswerable(kind: str, key: bytes | None, value: bytes) -> Hostile:
    return Hostile(kind, key, value, "invalid", None, None)


def _without(field: str) -> Callable[[dict[str, Any]], None]:
    return lambda document: document.pop(field)


def _setting(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda document: document.__setitem__(field, value)


def hostile(rng: random.Random, n: int, loan_ids: list[str], opened: list[OpenLoan]) -> Hostile:
    """The n-th hostile record, of a kind drawn by `rng`. `loan_ids` are loans that exist by
    the time it is decided; `opened` their accepted OpenLoan commands."""
    loan_id = rng.choice(loan_ids)
    key = loan_id.encode()
    kinds: list[Callable[[], Hostile]] = [
        lambda: _unanswerable("random bytes", key, rng.randbytes(rng.randrange(1, 300))),
        lambda: _unanswerable(
            "invalid utf-8", key, b'{"command_id": "h-' + str(n).encode() + b'\xff\xfe"}'
        ),
        lambda: _unanswerable("invalid json", key, b'{"command_id": "h-%d", "loan_id": ' % n),
        lambda: _unanswerable("not an object", key, b"[1, 2, 3]"),
        lambda: _unanswerable("empty", key, b""),
        lambda: _unanswerable("deeply nested", key, b"[" * 1_500 + b"]" * 1_500),
        lambda: _answered("missing field", n, loan_id, _without("issued_at")),
        lambda: _answered("extra field", n, loan_id, _setting("admin", True)),
        lambda: _answered("string for a number", n, loan_id, _setting("amount_minor", "10000")),
        lambda: _answered("huge integer", n, loan_id, _setting("amount_minor", 10**30)),
        lambda: _answered("negative amount", n, loan_id, _setting("amount_minor", -500)),
        lambda: _answered("zero amount", n, loan_id, _setting("amount_minor", 0)),
        lambda: _answered("unknown type", n, loan_id, _setting("type", "DropTable")),
        lambda: _nan(n, loan_id),
        lambda: _oversize(n, loan_id),
        lambda: _misrouted(n, loan_id),
        lambda: _unknown_loan(n),
        lambda: _replay(rng.choice(opened)),
        lambda: _altered_replay(n, rng.choice(opened)),
    ]
    # Big records are rarer, as in real traffic: an oversize one alone is 64 KiB, and the
    # dead-letter queue keeps its bytes (the whole flood is about 100 MB either way).
    weights = [1.0] * len(kinds)
    weights[14] = 0.25  # oversize
    return rng.choices(kinds, weights)[0]()


def _nan(n: int, loan_id: str) -> Hostile:
    value = json.dumps(_valid_document(n, loan_id)).replace(
        '"amount_minor": 10000', '"amount_minor": NaN'
    )
    return Hostile("NaN", loan_id.encode(), value.encode(), "invalid", f"h-{n}", "invalid_command")


def _oversize(n: int, loan_id: str) -> Hostile:
    document = _valid_document(n, loan_id)
    document["requested_by"] = "x" * (MAX_BYTES + 1)
    return Hostile(
        "oversize", loan_id.encode(), json.dumps(document).encode(), "oversize", None, None
    )


def _misrouted(n: int, loan_id: str) -> Hostile:
    value = json.dumps(_valid_document(n, loan_id)).encode()
    return Hostile(
        "misrouted key", b"someone-else", value, "misrouted", f"h-{n}", "invalid_command"
    )


def _unknown_loan(n: int) -> Hostile:
    loan_id = f"nobody-{n}"
    value = json.dumps(_valid_document(n, loan_id)).encode()
    return Hostile("unknown loan", loan_id.encode(), value, None, f"h-{n}", "unknown_loan")


def _replay(original: OpenLoan) -> Hostile:
    """The same command again: answered `duplicate` (its id is the original's)."""
    value = original.model_dump_json().encode()
    return Hostile(
        "replay", original.loan_id.encode(), value, None, original.command_id, "duplicate"
    )


def _altered_replay(n: int, original: OpenLoan) -> Hostile:
    """The original's id with another payload: refused `idempotency_conflict`."""
    altered = original.model_copy(update={"principal_minor": original.principal_minor + 1 + n})
    value = altered.model_dump_json().encode()
    return Hostile(
        "altered replay", original.loan_id.encode(), value, None, original.command_id,
        "idempotency_conflict",
    )  # fmt: skip


def opened_loans(prefix: str, count: int) -> list[OpenLoan]:
    return [open_loan(f"open-{prefix}-{n}", f"{prefix}-{n}") for n in range(count)]
