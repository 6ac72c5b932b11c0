"""The key cache is bounded: a consumer replaying a national year meets millions of people, and the cache
only saves unwrapping a key it can always read again (``KeyStore.existing_keys`` asks the database every
time), so holding every key met would grow memory with the number of people (~190 bytes each)."""

from __future__ import annotations

import os
from typing import Any

from infra.crypto import KeyStore, Opener, forget_all, forget_everywhere, seal


class _Conn:
    """Just enough of an asyncpg connection: every asked-for person has a wrapped key."""

    def __init__(self, wrapped: dict[str, bytes]) -> None:
        self.wrapped = wrapped

    async def fetch(self, _sql: str, people: list[str]) -> list[dict[str, Any]]:
        return [{"person_key": p, "wrapped": self.wrapped[p]} for p in people if p in self.wrapped]


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


async def test_a_keys_cipher_is_made_once_and_goes_with_its_key() -> None:
    """A batch's opener takes each person's cipher from the key store (``KeyStore.cipher``) instead of
    making one per person per batch (making one costs about what decrypting a block does). The cipher
    holds the key: it is kept only beside the cached key and goes with it — evicted, forgotten on an
    erasure, or with every key."""
    store = KeyStore(os.urandom(32), cache_max=2)
    people = ["p0", "p1", "p2"]
    keys = {p: os.urandom(32) for p in people}
    conn = _Conn({p: store._wrap_key(p, keys[p]) for p in people})
    blocks = {p: seal(keys[p], p, {"name": "x"}).model_dump() for p in people}
    for p in people[:2]:
        found = await store.existing_keys(conn, [p])  # type: ignore[arg-type]
        assert Opener(found, store).known_fit(p, blocks[p]) == {"name": "x"}
    made = store.cipher("p1", keys["p1"])
    assert store.cipher("p1", keys["p1"]) is made, "the same cipher, batch after batch"
    assert store.cipher("p1", os.urandom(32)) is not made, "a cipher is of its key"
    assert store.cipher("stranger", os.urandom(32)) is not None and not store.holds("stranger")

    await store.existing_keys(conn, ["p2"])  # type: ignore[arg-type]
    store.cipher("p2", keys["p2"])
    assert [p for p in people if store.holds(p)] == ["p1", "p2"], "p0's cipher evicted with its key"
    forget_everywhere(["p1"])
    assert [p for p in people if store.holds(p)] == ["p2"]
    forget_all()
    assert not any(store.holds(p) for p in people)
