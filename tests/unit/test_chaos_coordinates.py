"""Where Kafka puts a transactional id, so the chaos run can kill its coordinator on purpose."""

from hypothesis import given
from hypothesis import strategies as st

from tests.integration.chaos import coordinator_partition, java_string_hash


def test_the_hash_is_javas_string_hash_code() -> None:
    # Values printed by Java's "…".hashCode().
    assert java_string_hash("") == 0
    assert java_string_hash("hello") == 99162322
    assert java_string_hash("polygenelubricants") == -(2**31)
    assert java_string_hash("\U0001f600") == 1772899  # a surrogate pair: two UTF-16 units


def test_kafka_masks_the_sign_bit_instead_of_negating() -> None:
    # Math.abs(Integer.MIN_VALUE) stays negative; Kafka's Utils.abs gives 0 for it.
    assert coordinator_partition("polygenelubricants", 10) == 0
    assert coordinator_partition("hello", 50) == 99162322 % 50


@given(st.text(max_size=40), st.integers(min_value=1, max_value=200))
def test_every_id_lands_on_a_partition(transactional_id: str, partitions: int) -> None:
    assert 0 <= coordinator_partition(transactional_id, partitions) < partitions
