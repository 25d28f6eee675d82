"""The idempotency record's bound (docs/design.md, "Idempotency"), and the loan snapshot's codec.

A loan remembers its newest IDEMPOTENCY_WINDOW commands, its opening, and the commands about an
attempt in flight. A repeat of anything older is answered from the state: a request is a
duplicate by its attempt, a business day is stale, a channel answer finds its attempt settled.
None of them ever acts twice.
"""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest

from ledger import LoanState
from ledger.identity import event_id
from ledger.sequence import Quarantine
from ledger.snapshot import decode_snapshot, encode_quarantine, encode_snapshot
from ledger.state import IDEMPOTENCY_WINDOW
from schemas.outcomes import OutcomeStatus, RejectionReason
from tests.support.builders import (
    FIRST_DUE,
    LOAN,
    after,
    close_day,
    fold,
    given,
    in_flight_id,
    open_loan,
    processing,
    request,
    success,
    when,
)

DAYS = IDEMPOTENCY_WINDOW + 10


def _days(state: LoanState, count: int, first: int = 1) -> LoanState:
    """`count` quiet business days from FIRST_DUE + `first` days on (nothing falls due)."""
    base = FIRST_DUE + timedelta(days=first)
    return after(state, *(close_day(base + timedelta(days=n)) for n in range(count)))


def _paid_first_installment() -> LoanState:
    state = given(open_loan(), close_day(FIRST_DUE), request("r1"))
    attempt = state.attempt(in_flight_id(state))
    assert attempt is not None
    return after(state, success("ok-1", attempt.attempt_id, attempt.amount_minor))


def test_the_record_stays_within_its_window_whatever_the_loan_s_age() -> None:
    state = _days(_paid_first_installment(), 5 * DAYS)
    assert len(state.processed) <= IDEMPOTENCY_WINDOW
    assert "open-1" in state.processed  # the opening is kept for the loan's life


def test_a_repeated_opening_is_a_duplicate_at_any_age() -> None:
    state = _days(given(open_loan()), DAYS)
    decision = when(state, open_loan())
    assert decision.outcome.status is OutcomeStatus.DUPLICATE
    assert decision.events == ()


def test_a_request_repeated_past_the_window_is_a_duplicate_and_never_a_second_debit() -> None:
    state = _days(_paid_first_installment(), DAYS)
    assert "r1" not in state.processed
    decision = when(state, request("r1"))
    assert (decision.outcome.status, decision.events) == (OutcomeStatus.DUPLICATE, ())
    assert decision.outcome.event_ids == ()  # documented: past the window it names no event


def test_a_business_day_repeated_past_the_window_is_stale_and_closes_nothing() -> None:
    first = FIRST_DUE + timedelta(days=1)
    state = _days(given(open_loan()), DAYS)
    assert f"close-{first.isoformat()}" not in state.processed
    decision = when(state, close_day(first))
    assert decision.outcome.reason is RejectionReason.STALE_BUSINESS_DATE
    assert [event.type for event in decision.events] == ["CommandRejected"]
    # Decided afresh, its event still has an id of its own: ids derive from the seq too.
    command_id = f"close-{first.isoformat()}"
    earlier = {event_id(LOAN, command_id, seq) for seq in range(1, state.next_seq)}
    assert decision.events[0].event_id not in earlier


def test_answers_about_an_attempt_in_flight_are_kept_past_the_window() -> None:
    state = given(open_loan(), close_day(FIRST_DUE), request("r1"))
    attempt_id = in_flight_id(state)
    state = after(state, processing("gw-processing", attempt_id))
    state = _days(state, DAYS)
    assert "gw-processing" in state.processed  # pinned while the attempt is in flight
    repeat = when(state, processing("gw-processing", attempt_id))
    assert (repeat.outcome.status, repeat.events) == (OutcomeStatus.DUPLICATE, ())


def test_an_answer_repeated_after_its_attempt_settled_and_left_the_window_acts_never() -> None:
    state = _paid_first_installment()
    attempt = state.attempts[0]
    state = _days(state, DAYS)
    assert "ok-1" not in state.processed
    repeat = when(state, success("ok-1", attempt.attempt_id, attempt.amount_minor))
    assert repeat.outcome.reason is RejectionReason.ATTEMPT_SETTLED
    assert all(not event.postings for event in repeat.events)


def test_a_snapshot_decodes_to_the_state_it_was_made_from() -> None:
    state = _days(_paid_first_installment(), 3)
    found = decode_snapshot(encode_snapshot(state, events_from=123))
    assert found is not None
    assert (found.state, found.seq, found.events_from) == (state, state.next_seq - 1, 123)
    assert found.state is not None
    next_day = when(state, close_day(FIRST_DUE + timedelta(days=9))).events
    assert fold(found.state, next_day) == fold(state, next_day)


def test_a_quarantine_snapshot_keeps_the_quarantine() -> None:
    quarantine = Quarantine("L1", expected_seq=4, found_seq=6)
    found = decode_snapshot(encode_quarantine(quarantine, seq=3, events_from=9))
    assert found is not None
    assert (found.state, found.quarantine) == (None, quarantine)


def test_a_snapshot_of_a_version_this_code_does_not_read_asks_for_a_rebuild() -> None:
    value = encode_snapshot(given(open_loan()), events_from=0).replace(
        b'"version":1', b'"version":99'
    )
    assert decode_snapshot(value) is None


def test_bytes_that_are_no_snapshot_raise() -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_snapshot(b"not json")
