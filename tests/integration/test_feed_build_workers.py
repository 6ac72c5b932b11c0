"""A build whose feeds are shared with worker processes (``build_month(executor=…)``) keeps exactly what
a build in one process keeps: every revision's body, hidden cells, placement ids, changes and tallies,
for revision 1 at the cutoff and revision 2 (composed against revision 1's kept text) up to now."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from consumers.feed import builder
from consumers.feed.builder import build_month, composing_workers
from domain.calendar import YearMonth
from infra.config import Settings
from tests.integration.test_feed_counts import _month_rows, _write

pytestmark = pytest.mark.asyncio(loop_scope="session")

MONTH = YearMonth(2010, 7)  # a month (and cohorts) no other test writes
SEED = 7


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def authorities(pool: asyncpg.Pool) -> list[str]:
    """The month's rows, written once for the module's builds; its authorities."""
    rows = _month_rows(SEED, MONTH)
    async with pool.acquire() as conn, conn.transaction():
        await _write(conn, rows)
    return sorted({r[2] for r in rows["reg"]})


async def _build(pool: asyncpg.Pool, settings: Settings, authorities: list[str], executor: Any) -> list[Any]:
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM feed_revisions WHERE month = $1", str(MONTH))
        await conn.execute(
            "INSERT INTO feed_dirty (authority, month) SELECT a, $2 FROM unnest($1::text[]) AS a",
            authorities,
            str(MONTH),
        )
    await build_month(
        pool, settings, MONTH, now=datetime(2011, 9, 1, tzinfo=UTC), authorities=authorities,
        executor=executor, publish=False,
    )  # fmt: skip
    return [
        tuple(r)
        for r in await pool.fetch(
            "SELECT authority, revision, body::text, suppressed::text, placement_ids, changes::text, tallies "
            "FROM feed_revisions WHERE month = $1 ORDER BY authority, revision",
            str(MONTH),
        )
    ]


async def test_a_build_shared_with_worker_processes_keeps_what_one_process_keeps(
    pool: asyncpg.Pool, settings: Settings, authorities: list[str]
) -> None:
    alone = await _build(pool, settings, authorities, None)
    with composing_workers(settings.model_copy(update={"feed_build_workers": 1})) as executor:
        assert isinstance(executor, ProcessPoolExecutor)
        submit, shares = executor.submit, 0

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal shares
            shares += 1
            return submit(*args, **kwargs)

        executor.submit = counted  # type: ignore[method-assign]
        shared = await _build(pool, settings, authorities, executor)
    assert shares > 0  # the worker composed a share: the comparison below is not one process against itself
    with composing_workers(settings.model_copy(update={"feed_build_workers": 0})) as none:
        assert none is None
    assert {r[1] for r in alone} == {1, 2}  # both kinds of revision were built
    assert len({r[0] for r in alone}) == len(authorities)
    assert shared == alone


async def test_a_revision_composed_from_kept_cells_equals_one_composed_from_a_body_without_them(
    pool: asyncpg.Pool, settings: Settings, authorities: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Revision 2 is composed against revision 1 read from the cells kept beside its body (migration 067,
    ``read_kept``), or, for a revision kept before 067 (no cells), from its body parsed in full: through
    PostgreSQL (lz4, bytes), both ways keep the same revision 2 byte for byte."""
    with_cells = await _build(pool, settings, authorities, None)
    kept = await pool.fetchval(
        "SELECT count(*) FROM feed_revisions WHERE month = $1 AND revision = 1 AND cells IS NOT NULL",
        str(MONTH),
    )
    assert kept > 0, "revision 1 kept its cells: revision 2 was read from them"

    monkeypatch.setattr(builder, "_cells_text", lambda populations: None)  # as before migration 067
    without = await _build(pool, settings, authorities, None)
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM feed_revisions WHERE month = $1 AND cells IS NOT NULL", str(MONTH)
        )
        == 0
    )
    assert {r[1] for r in with_cells} == {1, 2}
    assert without == with_cells
