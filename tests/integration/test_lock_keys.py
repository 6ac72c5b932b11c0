"""The projector's role lock and the P9 erasure locks are different keys.

The shared-view role once had the acceptance erasure lock's key (7204002): a running ``hub run
shared-view`` held it exclusively for its whole life, so every accepting transaction (which takes it
shared) and every erasure (which takes it exclusively on another connection) waited for ever.
"""

from __future__ import annotations

import asyncpg

from consumers.shared_view.service import ProjectionService
from infra.config import Settings
from tests import factories
from tests.helpers import accept_then_erase


async def test_acceptance_and_erasure_go_on_while_the_projector_holds_its_role(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    projector = ProjectionService(settings, pool)
    async with projector.leadership:
        assert await projector.leadership.wait_held()
        person = factories.person_key()
        async with pool.acquire() as conn:
            # a bound, not a measurement: a shared key makes these wait for ever, and the test must end
            await conn.execute("SET lock_timeout = '30s'")
            try:
                await accept_then_erase(conn, settings, person)
            finally:
                await conn.execute("RESET lock_timeout")
        assert projector.leadership.held
