"""Deterministic identities: every id derives from the command, never from a clock or randomness."""

import hashlib
import json
import uuid
from datetime import date
from typing import Any

from schemas.base import WireModel

# Fixed forever: changing it would change every id the ledger ever derived.
LEDGER_NAMESPACE = uuid.UUID("5b0c7d2e-3c4f-5a61-9e8d-7f6a5b4c3d2e")


def _derived(*parts: object) -> str:
    """`uuid.uuid5(LEDGER_NAMESPACE, "/".join(parts)).hex`, computed without building UUID
    objects: the decider derives several ids per command (tests/unit/test_identity.py checks
    that both agree)."""
    name = "/".join(str(part) for part in parts).encode()
    digest = bytearray(_namespaced_sha1(name).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC 4122 variant
    return digest.hex()


def _namespaced_sha1(name: bytes) -> Any:
    hashed = _NAMESPACE_SHA1.copy()
    hashed.update(name)
    return hashed


_NAMESPACE_SHA1 = hashlib.sha1(LEDGER_NAMESPACE.bytes, usedforsecurity=False)


def event_id(loan_id: str, command_id: str, seq: int) -> str:
    """The event at `seq` of the loan, decided from the command. The seq makes it unique even
    when one command is decided twice into the log: a command past the idempotency window is
    decided afresh (docs/design.md, "Idempotency"). Before issue 14 the third part was the
    event's index within its decision; ids already in the log keep the old form."""
    return _derived("event", loan_id, command_id, "seq", seq)


def attempt_id(loan_id: str, command_id: str, index: int) -> str:
    """An attempt id; it is also the channel order id, so a repeated call is deduplicated."""
    return _derived("attempt", loan_id, command_id, index)


def refund_id(loan_id: str, command_id: str, index: int) -> str:
    return _derived("refund", loan_id, command_id, index)


def auto_debit_command_id(loan_id: str, installment: int, business_date: date) -> str:
    """Same loan, installment and day give the same id, so a scheduler rerun is a duplicate."""
    return "auto-debit:" + _derived("auto-debit", loan_id, installment, business_date.isoformat())


def payload_hash(command: WireModel) -> str:
    """Hash of what the command asks for. `issued_at` is left out: a client retrying the same
    request with a fresh timestamp is still the same request."""
    payload = command.model_dump(mode="json", exclude={"issued_at"})
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]
