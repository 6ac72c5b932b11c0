"""How a replay of several processes shares the partitions (``consumers.shared_view.replay.numbers_of``):
each partition with one member, and each member every topic's partition of the numbers it has, since a
person's events share one number on every topic (``infra.kafka.partitions_of``)."""

from __future__ import annotations

import pytest

from consumers.shared_view.replay import numbers_of

TOPICS = ("t.registration.v1", "t.consent.v1", "t.referral.v1", "t.erasure.v1")


@pytest.mark.parametrize("partitions", [1, 2, 5, 6, 12])
@pytest.mark.parametrize("members", [1, 2, 3, 6, 8])
def test_each_partition_is_one_members_and_a_member_has_all_topics_of_its_numbers(
    partitions: int, members: int
) -> None:
    ends = {(t, p): 10 for t in TOPICS for p in range(partitions)}
    shares = [numbers_of(m, members, ends) for m in range(members)]
    every = [tp for share in shares for tp in share]
    assert sorted(every) == sorted(ends), "each partition read, by one member"
    for share in shares:
        numbers = {p for _, p in share}
        assert set(share) == {(t, p) for t in TOPICS for p in numbers}, "every topic of its numbers"
    sizes = [len({p for _, p in share}) for share in shares]
    assert max(sizes) - min(sizes) <= 1, "numbers shared as evenly as they go"
