"""``infra.db.text_array``: a list of keys sent as one array literal (``$n::text::text[]``) is the list the
driver's array encoder sent (issue 14: the shared view's and the key store's lookups by key take it).
Any text, quotes, backslashes, braces, commas, blanks, the word NULL and the empty string included."""

from __future__ import annotations

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.db import text_array

# PostgreSQL's text holds no NUL; every other code point but lone surrogates (not UTF-8) may be a key.
_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
_AWKWARD = [
    "",
    "NULL",
    "null",
    '"',
    "\\",
    '\\"',
    "a,b",
    "{x}",
    " padded ",
    "\t",
    "ケース",
    '"quoted"',
    "}",
    "{",
]


async def _as_sent(conn: asyncpg.Connection, values: list[str]) -> tuple[list[str], list[str]]:
    literal = await conn.fetchval("SELECT $1::text::text[]", text_array(values))
    listed = await conn.fetchval("SELECT $1::text[]", values)
    return literal, listed


async def test_awkward_keys_arrive_as_the_drivers_encoder_sent_them(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        for values in ([], ["0123456789abcdef0123456789abcdef"], _AWKWARD, [_AWKWARD[1]] * 3):
            literal, listed = await _as_sent(conn, values)
            assert literal == listed == values


@pytest.mark.parametrize("key", _AWKWARD)
async def test_one_awkward_key_among_plain_ones_is_escaped(pool: asyncpg.Pool, key: str) -> None:
    values = ["0123456789abcdef0123456789abcdef", key, "fedcba9876543210fedcba9876543210"]
    async with pool.acquire() as conn:
        literal, listed = await _as_sent(conn, values)
    assert literal == listed == values


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(_TEXT, max_size=8))
async def test_any_keys_arrive_as_the_drivers_encoder_sent_them(
    pool: asyncpg.Pool, values: list[str]
) -> None:
    async with pool.acquire() as conn:
        literal, listed = await _as_sent(conn, values)
    assert literal == listed == values


async def test_a_lookup_by_the_literal_finds_what_the_list_finds(pool: asyncpg.Pool) -> None:
    keys = [f"{i:032x}" for i in range(50)]
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("CREATE TEMP TABLE keyed (k text PRIMARY KEY) ON COMMIT DROP")
        await conn.execute("INSERT INTO keyed SELECT unnest($1::text[])", keys[::2])
        asked = [*keys[10:30], "not-a-key", keys[10]]
        by_literal = await conn.fetch(
            "SELECT k FROM keyed WHERE k = ANY($1::text::text[]) ORDER BY k", text_array(asked)
        )
        by_list = await conn.fetch("SELECT k FROM keyed WHERE k = ANY($1::text[]) ORDER BY k", asked)
    assert [r[0] for r in by_literal] == [r[0] for r in by_list] == sorted(set(asked) & set(keys[::2]))
