"""The decider's table entries survive faust's json codec exactly (as on changelog recovery)."""

from __future__ import annotations

from faust.serializers import codecs

from streams.decider import StoredLoan
from tests.unit.builders import FIRST_DUE, close_day, given, open_loan, request, success


def test_a_stored_loan_with_allocations_survives_the_changelog_codec() -> None:
    state = given(open_loan(), close_day(FIRST_DUE), request("r1"))
    attempt = state.in_flight
    assert attempt is not None
    state = given(
        open_loan(),
        close_day(FIRST_DUE),
        request("r1"),
        success("s1", attempt.attempt_id, attempt.amount_minor),
    )
    stored = StoredLoan(offset=41, state=state)
    assert stored.state.attempts[0].allocations, "the regression needs enums inside the state"
    codec = codecs.get_codec("json")

    recovered = codec.loads(codec.dumps(stored.model_dump_json()))

    assert StoredLoan.model_validate_json(recovered) == stored
