"""The key cache is bounded: a consumer replaying a national year meets millions of people, and the cache
only saves unwrapping a key it can always read again (``KeyStore.existing_keys`` asks the database every
time), so holding every key met would grow memory with the number of people (~190 bytes each)."""

from __future__ import annotations

import os
from typing import Any

from infra.crypto import KeyStore


class _Record(dict[str, Any]):
    """A row as asyncpg's Record gives it: by column name, and its values in column order when unpacked."""

    def __iter__(self) -> Any:
        return iter(self.values())


class _Conn:
    """Just enough of an asyncpg connection: every asked-for person has a wrapped key."""

    def __init__(self, wrapped: dict[str, bytes]) -> None:
        self.wrapped = wrapped

    async def fetch(self, _sql: str, people: str) -> list[dict[str, Any]]:
        asked = [p.strip('"') for p in people.strip("{}").split(",")]  # infra.db.text_array of plain keys
        return [_Record(person_key=p, wrapped=self.wrapped[p]) for p in asked if p in self.wrapped]


async def test_the_key_cache_keeps_at_most_its_bound_newest_first() -> None:
    store = KeyStore(os.urandom(32), cache_max=3)
    people = [f"p{i}" for i in range(8)]
    keys = {p: os.urandom(32) for p in people}
    conn = _Conn({p: store._wrap_key(p, keys[p]) for p in people})
    for p in people:  # one person per batch, as many batches as people
        assert await store.existing_keys(conn, [p]) == {p: keys[p]}  # type: ignore[arg-type]
    assert [p for p in people if store.holds(p)] == people[-3:]
    # a key evicted from the cache is unwrapped again from the database, the same key
    assert await store.existing_keys(conn, people) == keys  # type: ignore[arg-type]
    assert sum(store.holds(p) for p in people) == 3
