"""An erasure followed while a key store is reading keys must not be undone by that read's caching."""

from __future__ import annotations

import os
from typing import Any

from infra.crypto import KeyStore, forget_all, forget_everywhere

PERSON = "p-erased-meanwhile"


class _Record(dict[str, Any]):
    """A row as asyncpg's Record gives it: by column name, and its values in column order when unpacked."""

    def __iter__(self) -> Any:
        return iter(self.values())


class _Conn:
    """Just enough of an asyncpg connection: the follower forgets the person while the query runs."""

    def __init__(self, rows: list[dict[str, Any]], forget: Any) -> None:
        self.rows = rows
        self.forget = forget

    def is_in_transaction(self) -> bool:
        return False

    async def fetch(self, _sql: str, *_args: Any) -> list[dict[str, Any]]:
        self.forget()  # the erasure follower runs at this await
        return self.rows


def _store_with_wrapped() -> tuple[KeyStore, bytes]:
    store = KeyStore(os.urandom(32))
    return store, store._wrap_key(PERSON, os.urandom(32))


async def test_existing_keys_does_not_cache_a_key_forgotten_during_its_read() -> None:
    store, wrapped = _store_with_wrapped()
    conn = _Conn([_Record(person_key=PERSON, wrapped=wrapped)], lambda: forget_everywhere([PERSON]))
    found = await store.existing_keys(conn, [PERSON])  # type: ignore[arg-type]
    assert PERSON in found  # the read itself saw the key (the database's fences judge its use)
    assert not store.holds(PERSON)


async def test_keys_for_does_not_cache_a_key_forgotten_during_its_read() -> None:
    store, wrapped = _store_with_wrapped()
    # The insert finds the key already there (made earlier); the read back happens after the erasure.
    calls = iter([[], [_Record(person_key=PERSON, wrapped=wrapped)]])

    class Conn(_Conn):
        async def fetch(self, _sql: str, *_args: Any) -> list[dict[str, Any]]:
            forget_all()
            return next(calls)

    await store.keys_for(Conn([], None), [PERSON])  # type: ignore[arg-type]
    assert not store.holds(PERSON)


async def test_a_read_with_no_erasure_meanwhile_is_cached() -> None:
    store, wrapped = _store_with_wrapped()
    conn = _Conn([_Record(person_key=PERSON, wrapped=wrapped)], lambda: None)
    await store.existing_keys(conn, [PERSON])  # type: ignore[arg-type]
    assert store.holds(PERSON)
