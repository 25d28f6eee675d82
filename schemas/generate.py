"""Generate the JSON Schema of every topic's value into `schemas/json/` (`make schemas`).

`python -m schemas.generate` writes them; `--check` exits 1 when the committed files differ.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgspec
from pydantic import TypeAdapter

from schemas.balances import BalanceRecord
from schemas.commands import TopicCommand
from schemas.events import Event
from schemas.outcomes import Outcome

OUTPUT = Path(__file__).with_name("json")
TOPIC_VALUES: dict[str, Any] = {
    "ledger.commands": TopicCommand,
    "ledger.events": Event,
    "ledger.outcomes": Outcome,
    "ledger.balances": BalanceRecord,
}


def _loan_snapshot_schema() -> dict[str, Any]:
    """`ledger.loan-states` holds the decider's own msgspec Structs (`ledger/snapshot.py`): a
    loan's snapshot under its loan id, the partition's business clock under `CLOCK_KEY`."""
    from ledger.snapshot import ClockSnapshot, LoanSnapshot  # the core's only use in schemas/

    (loan, clock), components = msgspec.json.schema_components(
        [LoanSnapshot, ClockSnapshot], ref_template="#/$defs/{name}"
    )
    return {"anyOf": [loan, clock], "$defs": components}


def _projector_snapshot_schema() -> dict[str, Any]:
    """`ledger.projector-states`: the projector's snapshot of each loan (`ledger/snapshot.py`)."""
    from ledger.snapshot import LoanBooks

    schema: dict[str, Any] = msgspec.json.schema(LoanBooks)
    return schema


def render() -> dict[str, str]:
    """File name -> JSON text, for every topic whose value is JSON we define."""
    files = {}
    schemas = {
        topic: TypeAdapter(model).json_schema(mode="serialization")
        for topic, model in TOPIC_VALUES.items()
    }
    schemas["ledger.loan-states"] = _loan_snapshot_schema()
    schemas["ledger.projector-states"] = _projector_snapshot_schema()
    for topic, schema in schemas.items():
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": topic,
            **schema,
        }
        files[f"{topic}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed files drift")
    args = parser.parse_args(argv)
    stale = [name for name, text in render().items() if _read(OUTPUT / name) != text]
    if args.check:
        for name in stale:
            print(f"schemas/json/{name} is out of date: run `make schemas`", file=sys.stderr)
        return 1 if stale else 0
    OUTPUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUTPUT / name).write_text(text)
    print(f"wrote {len(render())} schemas to {OUTPUT}")
    return 0


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


if __name__ == "__main__":
    sys.exit(main())
