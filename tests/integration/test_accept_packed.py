"""``accept_events_packed`` (migrations 050, 050a): ``accept_sealed`` hands ``accept_events`` its columns
of one value per event, data key or client packed into one parameter each. Unpacked, they must be exactly
what the arrays were: any text (commas, quotes, backslashes, JSON's own spellings, non-ASCII), any bytes
(empty, NUL, every byte value), in their order, and nothing for an empty column."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import orjson

from contracts.envelope import Event, Family, header_texts
from infra.config import Settings
from producers.outbox import accept_sealed

_TEXTS = [
    "a,b",
    '"quoted"',
    "back\\slash",
    "null",
    "[1, 2]",
    "{}",
    "tab\tnew\nline\x01",
    # not a test person's name: the relay publishes these rows to the session's topics, and
    # test_adapters_http::test_no_personal_value_in_any_topic reads those for every name the tests use
    "漢字 かな",
    "𠮷🙂",
    " spaced ",
]
_BYTES = [b"", b"\x00", b",", bytes(range(256)), b"", b'{"personal":"x"}', b"\xff" * 3000, b"", b"[", b"\\"]


async def test_every_packed_column_reaches_the_outbox_and_the_key_register_as_given(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    run = uuid.uuid4().hex
    now = datetime.now(UTC)
    events = [
        Event(f"{run}{text}", f"/src/{text}", f"type {text}", f"{run}{text}", now, Family.PLACEMENT, None)
        for text in _TEXTS
    ]
    values = {e.id: value for e, value in zip(events, _BYTES, strict=True)}
    wrapped = {e.subject: value[::-1] + b"k" for e, value in zip(events, _BYTES, strict=True)}
    units = [events[:3], events[3:4], events[4:]]  # units of several events, of one
    async with pool.acquire() as conn:
        verdicts = await accept_sealed(
            conn,
            units,
            wrapped,
            origin="test",
            namespace=settings.topic_namespace,
            value_of=lambda e: values[e.id],
        )
        assert verdicts.kept == {0, 1, 2}
        rows = await conn.fetch(
            "SELECT key, headers, value, event_id FROM outbox WHERE event_id = ANY($1::text[]) ORDER BY id",
            [e.id for e in events],
        )
        keys = await conn.fetch(
            "SELECT person_key, wrapped FROM person_data_keys WHERE person_key = ANY($1::text[])",
            list(wrapped),
        )
    assert [r["event_id"] for r in rows] == [e.id for e in events], "every event, in the order given"
    assert [bytes(r["key"]) for r in rows] == [e.subject.encode() for e in events]
    assert [r["headers"] for r in rows] == [header_texts(e) for e in events]
    assert [bytes(r["value"]) for r in rows] == _BYTES
    assert {r["person_key"]: bytes(r["wrapped"]) for r in keys} == wrapped


async def test_empty_columns_unpack_to_empty_arrays(pool: asyncpg.Pool, settings: Settings) -> None:
    """No events, no keys, no clients: nothing is written, nothing is refused."""
    async with pool.acquire() as conn:
        before = await conn.fetchval("SELECT count(*) FROM outbox")
        verdicts = await accept_sealed(conn, [], {}, origin="test", namespace=settings.topic_namespace)
        assert await conn.fetchval("SELECT count(*) FROM outbox") == before
    assert verdicts.kept == frozenset() and not verdicts.erased and not verdicts.conflicted
    assert orjson.dumps(sorted(verdicts.revoked)) == b"[]"
