"""``infra.kafka.partitions_of`` gives the partition Kafka's default partitioner gives: the shared view's
person locks (``consumers.shared_view.store.begin``) and the person-affine assignment both rest on it."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.kafka import partitions_of

PERSON_KEYS = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32).map(str.encode)
# Any bytes, of 32 too (the numpy path takes every 32-byte key, text or not), and any text encoded.
ANY_KEYS = st.one_of(
    PERSON_KEYS,
    st.binary(min_size=32, max_size=32),
    st.binary(max_size=40),
    st.text(max_size=40).map(str.encode),
)


def _kafka(key: bytes, partitions: int) -> int:
    every = list(range(partitions))
    return int(DefaultPartitioner()(key, every, every))


@settings(max_examples=300)
@given(st.lists(ANY_KEYS, max_size=50), st.integers(min_value=1, max_value=64))
def test_the_partition_kafka_gives(keys: list[bytes], partitions: int) -> None:
    assert partitions_of(keys, partitions) == [_kafka(k, partitions) for k in keys]


def test_person_keys_spread_over_every_partition() -> None:
    keys = [f"{i:032x}".encode() for i in range(600)]
    assert set(partitions_of(keys, 6)) == set(range(6))
    assert partitions_of(keys, 6) == [_kafka(k, 6) for k in keys]
