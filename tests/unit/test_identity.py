"""Derived ids are uuid5 in the ledger's namespace: the fast derivation must equal the library's.

Every id in the log was derived this way, so a change here would change what a repeat decides.
"""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from ledger import identity
from ledger.identity import LEDGER_NAMESPACE


@given(st.lists(st.one_of(st.text(), st.integers()), min_size=1, max_size=5))
def test_derived_ids_are_the_uuid5_of_their_parts(parts: list[object]) -> None:
    name = "/".join(str(part) for part in parts)
    assert identity._derived(*parts) == uuid.uuid5(LEDGER_NAMESPACE, name).hex


def test_an_event_id_is_fixed_for_ever() -> None:
    # Pinned: the ids of events already in the log were derived like this.
    assert identity.event_id("L1", "c1", 1) == "9d6745e30dee58c3a687cb74919c6fd3"
