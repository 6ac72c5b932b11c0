"""Replay: rebuild the shared view from the topics, from scratch, as today's consents and erasures say.

The view tables are emptied in the same transaction that forgets the consumer's positions, then the
ordinary projection runs from offset zero until it reaches the end offsets taken at the start: each
partition number's events first, then its consents (``_events_then_consents``: each record is then written
once). People on
the erasure register are skipped (their sealed data could not be opened anyway). Because a record is a
pure function of a person's events and consent, the result equals the view built incrementally.

Only one writer may own the view: the live consumer (``hub run shared-view``) leads the
``shared-view`` role (``infra.leadership``, lock ``AdvisoryLock.SHARED_VIEW_ROLE``), and a replay refuses to start while
it does. Every write of the replay is fenced by its epoch; if its lock is lost on the way (a database
restart), the replay stops and says so rather than race a consumer that took the lock meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from consumers.catchup import Positions, committed, end_offsets, reached
from consumers.runtime import ConsumerRuntime
from consumers.shared_view.handler import SharedViewHandler
from contracts.envelope import Family
from infra.config import Settings
from infra.db import AdvisoryLock, connect, create_pool
from infra.leadership import Follower, Leadership, SharedEpoch
from infra.logging import configure_logging, get_logger
from infra.runner import supervise, worker_index

log = get_logger("shared-view.replay")


class ReplayRefused(Exception):
    """``reason`` says why (safe to show)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ReplayResult:
    events: int
    seconds: float
    persons: int
    masked_events: int


async def reset_view(
    conn: asyncpg.Connection,
    consumer: str,
    fence: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
) -> None:
    """Empty the view and forget the consumer's positions, atomically (and only as the leader)."""
    async with conn.transaction():
        if fence is not None:
            await fence(conn)
        await conn.execute("TRUNCATE sv_persons, sv_events, sv_reveals, sv_consents")
        await conn.execute("DELETE FROM consumer_offsets WHERE consumer = $1", consumer)


_HELD = "the shared-view consumer is running ('hub run shared-view'); stop it first"


async def replay(
    settings: Settings,
    pool: asyncpg.Pool,
    *,
    handler: SharedViewHandler | None = None,
    progress: Callable[[int, int], None] | None = None,
    ends: Positions | None = None,
    share: SharedEpoch | None = None,
    members: int = 1,
) -> ReplayResult:
    """The replay (in one process, or as member 0 of ``replay_in_processes``' ``members``: ``ends`` taken
    by the parent, and ``share`` where the run's other members wait for the epoch, published once the
    view is empty)."""
    handler = handler or SharedViewHandler(settings)
    leadership = Leadership(settings, "shared-view", AdvisoryLock.SHARED_VIEW_ROLE)
    if not await leadership.acquire_now():
        raise ReplayRefused(_HELD)
    try:
        started = time.perf_counter()
        ends = ends if ends is not None else await end_offsets(settings, handler.topics)
        async with pool.acquire() as conn:
            await reset_view(conn, handler.name, leadership.fence)
        if share is not None:
            share.publish(leadership.epoch)
        catching_up = asyncio.create_task(
            _events_then_consents(handler, settings, pool, ends, leadership.fence, progress, members, 0)
        )
        lost = asyncio.create_task(leadership.lost.wait())
        await asyncio.wait({catching_up, lost}, return_when=asyncio.FIRST_COMPLETED)
        if not catching_up.done():
            if share is not None:
                share.publish(None)
            catching_up.cancel()  # the runtime at work stops cleanly (``run_until``), the next never starts
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await catching_up
            raise ReplayRefused(
                "the replay lost its lock (the database connection ended); nothing was written after "
                "that: run 'hub replay shared-view' again"
            )
        lost.cancel()
        await catching_up
        async with pool.acquire() as conn:
            persons = await conn.fetchval("SELECT count(*) FROM sv_persons")
        return ReplayResult(
            events=sum(ends.values()),
            seconds=time.perf_counter() - started,
            persons=persons,
            masked_events=handler.masked_events,
        )
    finally:
        await leadership.close()


async def follow_replay(
    settings: Settings,
    pool: asyncpg.Pool,
    ends: Positions,
    share: SharedEpoch,
    handler: SharedViewHandler,
    members: int,
) -> None:
    """A worker of ``replay_in_processes`` other than the first: wait until the first has emptied the view
    and published its epoch, then project its share under it until every member has committed ``ends``."""
    follower = Follower("shared-view", share)
    await follower.wait_held(asyncio.Event())  # the supervisor stops this worker if the first one fails
    await _events_then_consents(
        handler, settings, pool, ends, follower.fence, members=members, member=worker_index()
    )


_LOOK_S = 0.1  # how often the committed positions are looked at (consents to release, the end)


def numbers_of(member: int, members: int, ends: Positions) -> list[tuple[str, int]]:
    """The partitions a replay's ``member`` (0 … ``members``-1) reads: a contiguous share of the partition
    numbers, and every topic's partition of each (a person's events share one number on every topic,
    ``infra.kafka.partitions_of``), as Kafka's range assignor would give."""
    numbers = sorted({p for _, p in ends})
    mine = set(numbers[member * len(numbers) // members : (member + 1) * len(numbers) // members])
    return sorted(tp for tp in ends if tp[1] in mine)


async def _events_then_consents(
    handler: SharedViewHandler,
    settings: Settings,
    pool: asyncpg.Pool,
    ends: Positions,
    fence: Callable[[asyncpg.Connection], Awaitable[None]],
    progress: Callable[[int, int], None] | None = None,
    members: int = 1,
    member: int = 0,
) -> None:
    """Project everything before ``ends``: each partition number's events first, then its consents.

    The view is the same in any order (a record is a pure function of the person's events and consent),
    but not its cost. While no consent is applied, no one is in the view: each event is checked and
    stored (held), and no record is read, extended or written. Then each consent finds all its person's
    events stored, and the person's record is built from them and written once. Read together, the topics
    had a record written each time a batch brought its person's consent or more events after it, and held
    events opened again whenever a later consent revealed them: bench_projection's 20,000 events, 13,664
    records written for 5,384 people (or 5,398 when the consents happened to come last), and in three
    paired 20,000-event replays (load ~8) 82-98 µs of CPU here + 35-40 in PostgreSQL per event, against
    93-103 + 41-46.

    One run of the ordinary runtime (exactly-once, dead letters) on this member's partition numbers of
    every topic (``numbers_of``, assigned here: no consumer group, so no member waits for a join or a
    rebalance), the consent partitions held back (paused, ``ConsumerRuntime(held_back=…)``): a person's
    events and consents share one partition number, so a consent partition is released once every event
    partition of its number is committed up to ``ends``. It used to be two runs of a consumer group, the
    events' then the consents': each member joined the group twice, the first one given every partition
    until the next joined (bench_projection, 100,000 events, 2 processes: a member idle 1.4 s at the
    rebalance), and each waited for the whole group's events before the consents. It ends when every
    member has committed everything before ``ends``."""
    consents = settings.topic(Family.CONSENT)
    held = {tp for tp in ends if tp[0] == consents}
    runtime = ConsumerRuntime(
        handler,
        settings,
        pool,
        role="replay",
        fence=fence,
        held_back=held,
        assigned=numbers_of(member, members, ends),
    )
    events_of = {tp: [e for e in ends if e[0] != consents and e[1] == tp[1]] for tp in held}
    total = sum(ends.values())
    task = asyncio.create_task(runtime.run())
    try:
        async with pool.acquire() as conn:
            while True:
                done = await committed(conn, handler.name)
                ready = {tp for tp in held if all(done.get(e, 0) >= ends[e] for e in events_of[tp])}
                if ready:
                    runtime.release(ready)
                    held -= ready
                passed = reached(done, ends)
                if progress is not None:
                    progress(passed, total)
                if passed >= total:
                    break
                if task.done():
                    await task  # surfaces the runtime's failure
                    raise RuntimeError("the replay's consumer stopped before catching up")
                await asyncio.sleep(_LOOK_S)
    finally:
        runtime.stop()
        await task


def replay_in_processes(settings: Settings, workers: int, *, log_level: str = "WARNING") -> ReplayResult:
    """``hub replay shared-view --workers N``: the replay in ``workers`` processes, each reading its share
    of the partition numbers (``numbers_of``; ``infra.runner.supervise``), one writer still. Worker 0 takes the role (refusing while it is held),
    empties the view and publishes its epoch (``SharedEpoch``); the others wait for it and work under it
    (``infra.leadership.Follower``). Partitions are shared person-affine and each batch locks its
    people's partition numbers (``store.begin``), so the view is the one a single process rebuilds. Each
    worker stops once every worker has committed every record before the end offsets taken here, at
    the start. Raises ``ReplayRefused`` (the role is held) or ``SystemExit(1)`` (a worker failed)."""
    started = time.perf_counter()
    ends = asyncio.run(_ends_unless_held(settings))
    share = SharedEpoch()
    context = multiprocessing.get_context("fork")
    masked = context.RawArray("q", workers)

    async def work() -> None:
        configure_logging(log_level)
        index = worker_index()
        pool = await create_pool(settings)
        try:
            handler = SharedViewHandler(settings)
            if index == 0:
                await replay(
                    settings,
                    pool,
                    handler=handler,
                    ends=ends,
                    share=share,
                    members=workers,
                )
            else:
                await follow_replay(settings, pool, ends, share, handler, workers)
            masked[index] = handler.masked_events
        except ReplayRefused as refused:
            log.error("replay refused", reason=refused.reason)
            raise SystemExit(1) from None
        finally:
            await pool.close()

    supervise(lambda: asyncio.run(work()), workers)

    async def count() -> int:
        conn = await connect(settings)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM sv_persons"))
        finally:
            await conn.close()

    return ReplayResult(
        events=sum(ends.values()),
        seconds=time.perf_counter() - started,
        persons=asyncio.run(count()),
        masked_events=sum(masked),
    )


async def _ends_unless_held(settings: Settings) -> Positions:
    """The topics' end offsets, after a look at the role: a replay refuses at once while it is held (the
    first worker takes it for good, and refuses too if someone took it in between)."""
    conn = await connect(settings)
    try:
        free = await conn.fetchval("SELECT pg_try_advisory_lock($1)", AdvisoryLock.SHARED_VIEW_ROLE)
        if not free:
            raise ReplayRefused(_HELD)
        await conn.execute("SELECT pg_advisory_unlock($1)", AdvisoryLock.SHARED_VIEW_ROLE)
    finally:
        await conn.close()
    return await end_offsets(settings, settings.event_topics)
