"""A revision's columns kept out of line are compressed with lz4 where the server has it (016, 067a):
PostgreSQL's default (pglz) took about half of the database's CPU in keeping a national month's
revisions, and the cells kept for the next revision (067) were left at it."""

from __future__ import annotations

import asyncpg
import pytest

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_every_compressed_column_of_a_revision_is_compressed_with_lz4(pool: asyncpg.Pool) -> None:
    lz4 = await pool.fetchval(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
    )
    if not lz4:
        pytest.fail("this PostgreSQL has no lz4: the feed's revisions would be kept with pglz")
    compression = dict(
        await pool.fetch(
            "SELECT attname, attcompression::text FROM pg_attribute WHERE attrelid = 'feed_revisions'::regclass "
            "AND attnum > 0 AND NOT attisdropped AND attstorage <> 'p'"
        )
    )
    assert set(compression) == {"authority", "month", "body", "suppressed", "placement_ids", "changes",
                                "tallies", "cells"}  # fmt: skip
    # text keys of a few characters are never compressed: their setting does not matter
    assert {c: v for c, v in compression.items() if c not in ("authority", "month")} == dict.fromkeys(
        ("body", "suppressed", "placement_ids", "changes", "tallies", "cells"), "l"
    )
