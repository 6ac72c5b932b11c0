"""A consumer whose effect is NOT idempotent (one row per event handled), run as a real process.

If the runtime ever applied an event twice (replay after a crash) the ``test_effects`` table would show
it; if it lost one, the count would fall short. Used by the kill/restart tests; ``--workers N`` runs N
processes in one consumer group (``infra.runner.supervise``), each row naming the process that applied it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence

import asyncpg

from consumers.runtime import Consumed, ConsumerRuntime
from contracts.envelope import Family
from infra.config import Settings
from infra.runner import run_forever

# The one definition of the effects table, shared by every test that runs this consumer.
EFFECTS_TABLE = 'CREATE TABLE IF NOT EXISTS test_effects (event_id text NOT NULL, partition int, "offset" bigint, pid int)'


class CountingHandler:
    name = "counting"

    def __init__(self, settings: Settings) -> None:
        self.topics: Sequence[str] = (settings.topic(Family.REGISTRATION),)

    async def handle(self, conn: asyncpg.Connection, batch: Sequence[Consumed]) -> None:
        await conn.executemany(
            'INSERT INTO test_effects (event_id, partition, "offset", pid) VALUES ($1, $2, $3, $4)',
            [(c.event.id, c.partition, c.offset, os.getpid()) for c in batch],
        )
        # Slow enough that a kill (or a pause) lands mid-batch, with its transaction open.
        await asyncio.sleep(float(os.environ.get("HUB_TEST_BATCH_DELAY_S", "0.02")))


def group_of(settings: Settings) -> str:
    """The Kafka group of this consumer: one per topic namespace, so test runs sharing a broker never
    join each other's group (every join or lost member would stall the others' rebalances)."""
    return f"{CountingHandler.name}.{settings.topic_namespace}"


if __name__ == "__main__":
    workers = int(sys.argv[sys.argv.index("--workers") + 1]) if "--workers" in sys.argv else 1
    run_forever(
        lambda s, pool: [ConsumerRuntime(CountingHandler(s), s, pool, group_id=group_of(s))], workers=workers
    )
