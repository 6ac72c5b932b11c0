"""A build keeps each chunk's revisions while the next chunk composes (``builder._make_revisions``): what it
keeps is exactly what a build in one chunk keeps, and a chunk failing to compose while the previous chunk
is being written leaves nothing kept and the connection fit for use. Publishing, likewise: each chunk is
stamped while the next is encoded, and a failure leaves exactly the chunks before it stamped."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from consumers.feed import builder
from domain.calendar import YearMonth
from infra.config import Settings
from tests.helpers import read_topic
from tests.integration.test_feed_counts import _month_rows, _write

pytestmark = pytest.mark.asyncio(loop_scope="session")

MONTH = YearMonth(2006, 3)  # a month (and cohorts) no other test writes
SEED = 9


async def _build(pool: asyncpg.Pool, settings: Settings, authorities: list[str]) -> list[tuple[Any, ...]]:
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM feed_revisions WHERE month = $1", str(MONTH))
        await conn.execute(
            "INSERT INTO feed_dirty (authority, month) SELECT a, $2 FROM unnest($1::text[]) AS a",
            authorities,
            str(MONTH),
        )
    await builder.build_month(
        pool, settings, MONTH, now=datetime(2007, 5, 1, tzinfo=UTC), authorities=authorities, publish=False
    )
    return [
        tuple(r)
        for r in await pool.fetch(
            "SELECT authority, revision, body::text, suppressed::text, placement_ids, changes::text, tallies "
            "FROM feed_revisions WHERE month = $1 ORDER BY authority, revision",
            str(MONTH),
        )
    ]


@pytest.fixture
async def authorities(pool: asyncpg.Pool) -> list[str]:
    rows = _month_rows(SEED, MONTH)
    async with pool.acquire() as conn, conn.transaction():
        # written once for the module's tests (the facts' keys are this seed's)
        if not await conn.fetchval(
            "SELECT count(*) FROM feed_registrations WHERE event_id = $1", rows["reg"][0][0]
        ):
            await _write(conn, rows)
    return sorted({r[2] for r in rows["reg"]})


async def test_a_build_written_while_the_next_chunk_composes_keeps_what_one_chunk_keeps(
    pool: asyncpg.Pool, settings: Settings, authorities: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = await _build(pool, settings, authorities)
    assert {r[1] for r in whole} == {1, 2}  # both kinds of revision were built
    assert len({r[0] for r in whole}) == len(authorities) > 2

    # One feed a chunk: each chunk's revisions are written while the next one composes.
    composing, overlapped, read_ahead = False, 0, 0
    keep, compose, chunk_work = builder._keep, builder._compose_all, builder._chunk_work

    async def counted_keep(*args: Any) -> None:
        nonlocal overlapped
        overlapped += composing  # a write begun while a chunk composes (no clock: the order of the calls)
        await keep(*args)

    async def counted_reads(*args: Any) -> Any:
        nonlocal read_ahead
        read_ahead += composing  # the next chunk's reads, begun while this one composes
        return await chunk_work(*args)

    async def counted_compose(*args: Any) -> Any:
        nonlocal composing
        composing = True
        try:
            return await compose(*args)
        finally:
            composing = False

    monkeypatch.setattr(builder, "_CHUNK", 1)
    monkeypatch.setattr(builder, "_keep", counted_keep)
    monkeypatch.setattr(builder, "_compose_all", counted_compose)
    monkeypatch.setattr(builder, "_chunk_work", counted_reads)
    chunked = await _build(pool, settings, authorities)
    assert read_ahead > 0
    assert overlapped > 0  # the chunks were pipelined: the comparison is not one chunk against itself
    assert chunked == whole


async def test_a_chunk_failing_to_compose_while_the_previous_one_is_written_keeps_nothing(
    pool: asyncpg.Pool, settings: Settings, authorities: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    compose = builder._compose_all
    calls = 0

    async def failing_second(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first chunk's revisions are being written meanwhile
            raise RuntimeError("composing failed")
        return await compose(*args)

    monkeypatch.setattr(builder, "_CHUNK", 1)
    monkeypatch.setattr(builder, "_compose_all", failing_second)
    with pytest.raises(RuntimeError, match="composing failed"):
        await _build(pool, settings, authorities)
    assert calls == 2
    assert await pool.fetchval("SELECT count(*) FROM feed_revisions WHERE month = $1", str(MONTH)) == 0
    # The marks stay for the next build, and every connection of the pool is fit for use.
    assert await pool.fetchval("SELECT count(*) FROM feed_dirty WHERE month = $1", str(MONTH)) == len(
        authorities
    )
    monkeypatch.setattr(builder, "_compose_all", compose)
    assert {r[1] for r in await _build(pool, settings, authorities)} == {1, 2}


async def _stamped(pool: asyncpg.Pool) -> list[tuple[str, int]]:
    return [
        (r["authority"], r["revision"])
        for r in await pool.fetch(
            "SELECT authority, revision FROM feed_revisions WHERE month = $1 AND published_at IS NOT NULL "
            "ORDER BY authority, revision",
            str(MONTH),
        )
    ]


async def test_revisions_published_while_the_next_chunk_is_encoded_are_all_on_the_topic_in_order(
    pool: asyncpg.Pool, settings: Settings, authorities: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = await _build(pool, settings, authorities)
    monkeypatch.setattr(builder, "_CHUNK", 1)  # one revision a chunk: each stamped while the next is encoded
    await builder.publish_pending(pool, settings)
    assert await _stamped(pool) == [(r[0], r[1]) for r in kept]
    # Each feed's revisions of this build are the last sent under its key (one partition each), in order.
    sent: dict[str, list[int]] = {}
    for r in await read_topic(settings, settings.feed_topic):
        if r.key.endswith(f":{MONTH}".encode()):
            sent.setdefault(r.key.decode()[:6], []).append(json.loads(r.value)["revision"])
    for a in authorities:
        revisions = [r[1] for r in kept if r[0] == a]
        assert sent[a][-len(revisions) :] == revisions


async def test_a_chunk_failing_to_encode_leaves_the_chunks_before_it_stamped_and_none_after(
    pool: asyncpg.Pool, settings: Settings, authorities: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = await _build(pool, settings, authorities)
    failing = authorities[2]
    encoded = builder._encoded

    def failing_at(rows: Any) -> Any:
        if any(f'"authority":"{failing}"'.encode() in body for body, _ in rows):
            raise RuntimeError("encoding failed")
        return encoded(rows)

    monkeypatch.setattr(builder, "_CHUNK", 1)
    monkeypatch.setattr(builder, "_encoded", failing_at)
    with pytest.raises(RuntimeError, match="encoding failed"):
        await builder.publish_pending(pool, settings)
    # Every chunk before the failing one was acknowledged and stamped, as one chunk after another did.
    assert await _stamped(pool) == [(r[0], r[1]) for r in kept if r[0] < failing]
