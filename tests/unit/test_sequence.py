"""The seq rule (`ledger.sequence`), the one every reader of the events log applies."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ledger.sequence import Quarantine, SeqTracker, Verdict


def test_next_repeat_gap_then_quarantined() -> None:
    seqs = SeqTracker()
    verdicts = [seqs.admit("L", seq) for seq in (1, 2, 2, 1, 4, 3, 5)]
    assert verdicts == [
        Verdict.NEXT, Verdict.NEXT, Verdict.REPEAT, Verdict.REPEAT,
        Verdict.GAP, Verdict.QUARANTINED, Verdict.QUARANTINED,
    ]  # fmt: skip
    assert seqs.quarantined == {"L": Quarantine("L", 3, 4)}
    assert seqs.admit("M", 1) is Verdict.NEXT  # other loans go on


def test_an_unreadable_record_quarantines_its_loan_once() -> None:
    seqs = SeqTracker()
    seqs.admit("L", 1)
    first = seqs.unreadable("L")
    assert first == Quarantine("L", 2, None)
    assert seqs.unreadable("L") is first
    assert seqs.admit("L", 2) is Verdict.QUARANTINED


def test_a_partial_reader_skips_repeats_and_knows_no_gap() -> None:
    seqs = SeqTracker(partial=True)
    verdicts = [seqs.admit("L", seq) for seq in (57, 60, 58, 61)]
    assert verdicts == [Verdict.NEXT, Verdict.NEXT, Verdict.REPEAT, Verdict.NEXT]
    assert seqs.quarantined == {}


@given(st.lists(st.integers(min_value=1, max_value=12), max_size=60))
def test_what_is_applied_is_the_loans_seqs_in_order_each_once(delivered: list[int]) -> None:
    """Whatever arrives, the seqs applied are 1, 2, ... k with no repeat, k being how far the
    delivery went before its first gap; the loan is quarantined exactly when a gap came."""
    seqs = SeqTracker()
    applied = [seq for seq in delivered if seqs.admit("L", seq) is Verdict.NEXT]
    assert applied == list(range(1, len(applied) + 1))
    expected, gap = 1, False
    for seq in delivered:
        if seq > expected:
            gap = True
            break
        expected = max(expected, seq + 1)
    assert ("L" in seqs.quarantined) == gap
