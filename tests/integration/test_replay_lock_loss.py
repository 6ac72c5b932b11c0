"""A replay whose lock ends mid-phase (``consumers.shared_view.replay``: the phase at work is cancelled).

The lock's connection is ended (``pg_terminate_backend``, as a database restart would) while a batch of
the phase is in flight, and that batch waits until the replay has seen the loss: the batch in flight had
proved the lock in its transaction (``FOR SHARE`` on the role's epoch, which a new holder's bump waits
for) and may commit; no batch after it may. Deterministic whatever the machine's load: the loss comes at a
given batch, and nothing is judged from a pause. Everything runs in a database and topic namespace of this
module's own (a replay empties the view)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest
import pytest_asyncio

from consumers.runtime import Consumed, group_id_for
from consumers.shared_view.handler import SharedViewHandler
from consumers.shared_view.replay import ReplayRefused, replay
from contracts.envelope import Family
from devtools.stack import namespaces
from infra.config import Settings
from infra.db import AdvisoryLock, create_pool, drop_database, recreate_database
from infra.leadership import SharedEpoch
from infra.topics import ensure_topics
from tests.helpers import group_members, publish_records, sealed_stream, view_digest

CONSUMER = "shared-view"
# Every table a replay writes (the view's and the positions committed with it).
WRITTEN = ("sv_persons", "sv_events", "sv_reveals", "sv_consents", "consumer_offsets")
# Long enough for a busy machine; only a replay that never stops reaches it.
NEVER_STOPPED_S = 300


@pytest.fixture(scope="module")
def own(settings: Settings) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return settings.model_copy(
        update={
            "pg_database": f"ittai_test_rll{tag}",
            "topic_namespace": f"rll{tag}",
            "batch_max_records": 50,  # many batches per phase: the loss comes mid-phase
        }
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def own_pool(live_stack: None, own: Settings) -> AsyncIterator[asyncpg.Pool]:
    lease = namespaces.claim(own, database=own.pg_database)
    await recreate_database(own)
    await ensure_topics(own, [*own.event_topics, own.deadletter_topic])
    pool = await create_pool(own, max_size=4)
    await publish_records(own, await sealed_stream(own, pool, seed=16))
    yield pool
    await pool.close()
    await drop_database(own, missing_ok_if_busy=True)
    await namespaces.release(own, [lease] if lease else [])


class LosesItsLock(SharedViewHandler):
    """The projection, recording what each batch handled; in batch ``at`` of the ``consents`` phase (or
    of the events' phase) it ends the lock's connection and waits until the replay has seen the loss
    (``share`` unpublished) before it goes on."""

    def __init__(self, settings: Settings, share: SharedEpoch, *, consents: bool, at: int) -> None:
        super().__init__(settings)
        self.share, self.consents, self.at = share, consents, at
        self.batches = 0
        self.handled: list[tuple[str, int, int]] = []  # by the batches up to the one at the loss
        self.xid: int | None = None  # the transaction of the batch in flight at the loss

    async def handle(self, conn: asyncpg.Connection, batch: Sequence[Consumed]) -> None:
        if (batch[0].event.family is Family.CONSENT) == self.consents:
            self.batches += 1
        if self.xid is None:
            self.handled += [(c.topic, c.partition, c.offset) for c in batch]
        await super().handle(conn, batch)
        if self.batches == self.at and self.xid is None:
            self.xid = await conn.fetchval("SELECT pg_current_xact_id()::text::bigint % 4294967296")
            ended = await conn.fetchval(
                "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database() "
                "AND l.objid::bigint = $1",
                AdvisoryLock.SHARED_VIEW_ROLE,
            )
            assert ended == 1, "the replay holds the lock"
            while self.share.epoch is not None:
                await asyncio.sleep(0.01)


@pytest.mark.parametrize("consents", [False, True], ids=["events-phase", "consents-phase"])
async def test_a_replay_that_loses_its_lock_mid_phase_stops_and_commits_nothing_after(
    own: Settings, own_pool: asyncpg.Pool, consents: bool
) -> None:
    async with own_pool.acquire() as conn:
        await replay(own, own_pool)
        whole = await view_digest(conn)
        ends = {
            (r["topic"], r["partition"]): r["next_offset"]
            for r in await conn.fetch(
                "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer = $1", CONSUMER
            )
        }
        consent_topic = own.topic(Family.CONSENT)
        assert sum(n for (t, _), n in ends.items() if t == consent_topic) > 3 * own.batch_max_records

        share = SharedEpoch()
        handler = LosesItsLock(own, share, consents=consents, at=3)
        tasks = asyncio.all_tasks()
        with pytest.raises(ReplayRefused, match="lost its lock"):
            await asyncio.wait_for(replay(own, own_pool, handler=handler, share=share), NEVER_STOPPED_S)
        left = [t for t in asyncio.all_tasks() - tasks if not t.done()]
        for task in left:  # stopped before failing: a runtime left running would hold its connection
            task.cancel()
        if left:
            await asyncio.wait(left)
        assert not left, f"the replay left tasks running: {[t.get_name() for t in left]}"
        assert not (await group_members(own, group_id_for(CONSUMER, own, "replay")))[1], (
            "no member left in the group"
        )

        # Committed: exactly what the batches up to the one in flight at the loss handled (the events'
        # phase whole before the consents'), nothing after it, and every view row written by then.
        assert handler.xid is not None
        applied: dict[tuple[str, int], int] = {}
        for topic, partition, offset in handler.handled:
            applied[topic, partition] = max(applied.get((topic, partition), 0), offset + 1)
        rows = await conn.fetch(
            "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer = $1", CONSUMER
        )
        assert {(r["topic"], r["partition"]): r["next_offset"] for r in rows} == applied
        assert applied != ends, "the replay stopped before the end"
        assert any(t == consent_topic for t, _ in applied) == consents
        for table in WRITTEN:
            later = await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE xmin::text::bigint > $1", handler.xid
            )
            assert later == 0, f"{table}: {later} rows written after the batch in flight at the loss"

        await replay(own, own_pool)
        assert await view_digest(conn) == whole, "a replay after the loss builds the same view"
    assert whole[1] > 50, "a view worth comparing"
