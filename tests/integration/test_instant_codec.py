"""``infra.db.write_instants_directly``: a connection with the event log's timestamptz codec writes and reads
what asyncpg's own codec would — the instant at any offset, its infinity sentinels, naive datetimes and
dates as local time, and the same refusals — because a pool hands that connection on to other work."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

from infra.config import Settings
from infra.db import connect, write_instants_directly

_VALUES: list[Any] = [
    datetime(2025, 4, 3, 9, 15, 0, 123456, tzinfo=timezone(timedelta(hours=9))),
    datetime(2031, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-3, minutes=-30))),
    datetime(2000, 1, 1, tzinfo=UTC),
    datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(1, 1, 1, tzinfo=UTC),  # asyncpg's -infinity
    datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
    datetime(1, 1, 1, 2, 0, tzinfo=timezone(timedelta(hours=2))),  # the same instant as -infinity's
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),  # asyncpg's infinity
    datetime(9999, 12, 31, 23, 59, 59, 999998, tzinfo=UTC),
    datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),  # before datetime's first instant in UTC
    datetime(9999, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=-1))),  # after its last
    datetime(2025, 4, 3, 12, 0, 0, 5),  # naive: local time
    datetime(9999, 12, 31, 23, 59, 59, 999999),  # naive extremes: ±infinity
    datetime(1, 1, 1),
    date(2025, 4, 3),  # local midnight
    "2025-04-03T00:00:00Z",  # not a time
    None,
]


async def _answers(conn: asyncpg.Connection) -> list[tuple[str, Any]]:
    await conn.execute("SET TIME ZONE 'UTC'")
    answers: list[tuple[str, Any]] = []
    for value in _VALUES:
        try:
            row = await conn.fetchrow("SELECT $1::timestamptz AS t, $1::timestamptz::text AS text", value)
        except (asyncpg.DataError, TypeError, OverflowError, ValueError) as exc:
            answers.append(("refused", type(exc).__name__))
        else:
            assert row is not None
            answers.append(("stored", (row["t"], row["text"])))
    arrays = await conn.fetchval("SELECT $1::timestamptz[]::text", [_VALUES[0], None, _VALUES[8]])
    answers.append(("array", arrays))
    return answers


async def test_the_direct_codec_writes_and_reads_what_asyncpgs_own_does(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    # two connections of their own (one of the pool's may have the codec already)
    own, direct = await connect(settings), await connect(settings)
    try:
        await write_instants_directly(direct)
        expected, got = await _answers(own), await _answers(direct)
    finally:
        await own.close()
        await direct.close()
    assert got == expected
    # not vacuous: infinity both ways, instants stored, and refusals among them
    texts = [a[1][1] for a in expected if a[0] == "stored" and a[1] is not None]
    assert "infinity" in texts and "-infinity" in texts and "2025-04-03 00:15:00.123456+00" in texts
    assert [a for a in expected if a[0] == "refused"]


@pytest.mark.parametrize("offset", [timedelta(hours=9), timedelta(hours=-3, minutes=-30), timedelta(0)])
async def test_an_instant_reads_back_as_itself_in_utc(
    pool: asyncpg.Pool, settings: Settings, offset: timedelta
) -> None:
    conn = await connect(settings)
    try:
        await write_instants_directly(conn)
        value = datetime(2025, 4, 3, 9, 15, 0, 123456, tzinfo=timezone(offset))
        back = await conn.fetchval("SELECT $1::timestamptz", value)
    finally:
        await conn.close()
    assert back == value and back.tzinfo is UTC
