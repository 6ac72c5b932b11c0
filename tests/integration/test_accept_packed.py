"""``accept_events_packed`` (migration 050): ``accept_sealed`` hands ``accept_events`` its columns of one
value per event, data key or client packed into one parameter each. Unpacked, they must be exactly what
the arrays were: any text (commas, quotes, backslashes, JSON's own spellings, non-ASCII), any bytes (empty,
NUL, every byte value), in their order, and nothing for an empty column."""

from __future__ import annotations

import asyncpg

from producers.outbox import _ends, _ints, _texts

_TEXTS = [
    "",
    "a,b",
    '"quoted"',
    "back\\slash",
    "null",
    "[1, 2]",
    "{}",
    "tab\tnew\nline\x01",
    "髙橋 花子",
    "𠮷🙂",
    " spaced ",
    "0123456789abcdef0123456789abcdef",
]
_BYTES = [b"", b"\x00", b",", bytes(range(256)), b"", b'{"personal":"x"}', b"\xff" * 3000, b""]


async def test_texts_unpack_to_the_same_texts_in_order(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT packed_texts($1)", _texts(_TEXTS)) == _TEXTS
        assert await conn.fetchval("SELECT packed_texts($1)", _texts(_TEXTS[::-1])) == _TEXTS[::-1]
        assert await conn.fetchval("SELECT packed_texts($1)", _texts([])) == []


async def test_byte_strings_unpack_to_the_same_bytes_in_order(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        unpacked = await conn.fetchval("SELECT packed_slices($1, $2)", b"".join(_BYTES), _ends(_BYTES))
        assert unpacked == _BYTES
        assert await conn.fetchval("SELECT packed_slices($1, $2)", b"", _ends([])) == []
        assert await conn.fetchval("SELECT packed_slices($1, $2)", b"", _ends([b""])) == [b""]


async def test_integers_unpack_in_order(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT packed_ints($1)", _ints([0, 0, 1, 12, 3])) == [0, 0, 1, 12, 3]
        assert await conn.fetchval("SELECT packed_ints($1)", _ints([])) == []
