"""One way for a CLI command to reach the database: ``prepare`` (start-up retries, migrations), one
connection for the action, the pool closed afterwards."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg


async def with_conn(action: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
    # Imported here: `hub --help` and the stack commands must not pay for (or need) the database layer.
    from infra.config import get_settings
    from infra.runner import prepare

    pool = await prepare(get_settings())
    try:
        async with pool.acquire() as conn:
            return await action(conn)
    finally:
        await pool.close()
