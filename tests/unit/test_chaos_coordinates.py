"""Where Kafka puts a transactional id, so the chaos run can kill its coordinator on purpose."""

from hypothesis import given
from hypothesis import strategies as st

from tests.support.chaos import coordinator_partition, java_string_hash


def test_the_hash_is_javas_string_hash_code() -> None:
    # Values printed by Java's "…".hashCode().
    assert java_string_hash("") == 0
    assert java_string_hash("hello") == 99162322
    assert java_string_hash("polygenelubricants") == -(2**31)
    assert java_string_hash("\U0001f600") == 1772899  # a surrogate pair: two UTF-16 units


def test_kafka_takes_the_absolute_value_and_min_value_gives_0() -> None:
    # Kafka's Utils.abs: Integer.MIN_VALUE -> 0, else Math.abs.
    assert coordinator_partition("polygenelubricants", 10) == 0
    assert coordinator_partition("hello", 50) == 99162322 % 50


def test_negative_hashes_land_where_a_broker_put_them() -> None:
    # Read from a chaos run's broker logs ("Stabilized group ... (__consumer_offsets-0)"), with
    # offsets.topic.num.partitions=10. Masking the sign bit instead gave 8 and 3: wrong brokers.
    assert java_string_hash("it.e7aaa6ba10.ledger-batched-decider") == -692040040
    assert coordinator_partition("it.e7aaa6ba10.ledger-batched-decider", 10) == 0
    assert coordinator_partition("it.bbfda6d4a8.ledger-batched-projector", 10) == 5


@given(st.text(max_size=40), st.integers(min_value=1, max_value=200))
def test_every_id_lands_on_a_partition(transactional_id: str, partitions: int) -> None:
    assert 0 <= coordinator_partition(transactional_id, partitions) < partitions
