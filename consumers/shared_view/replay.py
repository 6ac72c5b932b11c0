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

from consumers.catchup import Positions, end_offsets
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
    together: Callable[[], Awaitable[None]] | None = None,
    members: int = 1,
) -> ReplayResult:
    """The replay (in one process, or as worker 0 of ``replay_in_processes``' ``members``: ``ends`` taken
    by the parent, ``share`` where the run's other workers wait for the epoch, published once the view is
    empty, and ``together`` awaited before consuming, so that every member joins the group at once)."""
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
        if together is not None:
            await together()
        catching_up = asyncio.create_task(
            _events_then_consents(handler, settings, pool, ends, leadership.fence, progress, members)
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
    started: Callable[[], None],
    members: int,
) -> None:
    """A worker of ``replay_in_processes`` other than the first: wait until the first has emptied the view
    and published its epoch, then project under it until the whole group has committed ``ends``."""
    follower = Follower("shared-view", share)
    await follower.wait_held(asyncio.Event())  # the supervisor stops this worker if the first one fails
    started()
    await _events_then_consents(handler, settings, pool, ends, follower.fence, members=members)


# A replay member's heartbeat (aiokafka's default: every 3 s). The members of a replay of several processes
# join its group one after the other: the first is given every partition, and the group is rebalanced when
# the next one joins; the members consuming learn of it only at their next heartbeat, and the one joining
# waits idle till then. Measured (bench_projection's 30,000 events, `--workers 2`, when each phase was a
# group of its own): 3.7 s of the events phase and 5.2 s of the consent phase went so, of a 20 s replay.
# Every 250 ms, a member joining waits about that (and the batch in flight) instead. Only where there are
# several members (a replay in one process has no one to wait for, and heartbeating 12 times as often took
# ~1% of its samples).
REPLAY_CONSUMER = {"heartbeat_interval_ms": 250}
_LOOK_S = 0.1  # how often the committed positions are looked at (consents to release, the end)


async def _events_then_consents(
    handler: SharedViewHandler,
    settings: Settings,
    pool: asyncpg.Pool,
    ends: Positions,
    fence: Callable[[asyncpg.Connection], Awaitable[None]],
    progress: Callable[[int, int], None] | None = None,
    members: int = 1,
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

    One run of the ordinary runtime (exactly-once, dead letters, one group) on every topic, the consent
    partitions held back (paused, ``ConsumerRuntime(held_back=…)``): a person's events and consents share
    one partition number (``infra.kafka.partitions_of``), so a consent partition is released once the
    group has committed every event partition of its number up to ``ends``, whichever member did it. It
    used to be two runs, the events' then the consents': each member left the group and joined it again
    between them, and each waited for the whole group to finish the events (a member joining costs
    about a batch per member and phase, and the slowest member's tail). It ends when the whole group has committed everything before ``ends``; ``members`` > 1: the
    consumers heartbeat often (``REPLAY_CONSUMER``)."""
    consents = settings.topic(Family.CONSENT)
    held = {tp for tp in ends if tp[0] == consents}
    runtime = ConsumerRuntime(
        handler,
        settings,
        pool,
        role="replay",
        fence=fence,
        person_affine=True,
        consumer_options=REPLAY_CONSUMER if members > 1 else None,
        held_back=held,
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
                reached = sum(min(done.get(tp, 0), end) for tp, end in ends.items())
                if progress is not None:
                    progress(reached, total)
                if reached >= total:
                    break
                if task.done():
                    await task  # surfaces the runtime's failure
                    raise RuntimeError("the replay's consumer stopped before catching up")
                await asyncio.sleep(_LOOK_S)
    finally:
        runtime.stop()
        await task


async def committed(conn: asyncpg.Connection, consumer: str) -> Positions:
    """The consumer's committed positions (next offset per partition)."""
    rows = await conn.fetch(
        "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer = $1", consumer
    )
    return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}


def replay_in_processes(settings: Settings, workers: int, *, log_level: str = "WARNING") -> ReplayResult:
    """``hub replay shared-view --workers N``: the replay in ``workers`` processes of one consumer group
    (``infra.runner.supervise``), one writer still. Worker 0 takes the role (refusing while it is held),
    empties the view and publishes its epoch (``SharedEpoch``); the others wait for it and work under it
    (``infra.leadership.Follower``). Partitions are assigned person-affine and each batch locks its
    people's partition numbers (``store.begin``), so the view is the one a single process rebuilds. Each
    worker stops once the whole group has committed every record before the end offsets taken here, at
    the start. Raises ``ReplayRefused`` (the role is held) or ``SystemExit(1)`` (a worker failed)."""
    started = time.perf_counter()
    ends = asyncio.run(_ends_unless_held(settings))
    share = SharedEpoch()
    context = multiprocessing.get_context("fork")
    masked, starting = context.RawArray("q", workers), context.RawArray("b", workers)

    async def together() -> None:
        # A member joining a group already consuming makes every member stop at its next heartbeat for
        # a rebalance (seconds): the first worker waits (a bounded while) for the others to be starting.
        for _ in range(200):
            if sum(starting) >= workers - 1:
                return
            await asyncio.sleep(0.05)

    def mark_started() -> None:
        starting[worker_index()] = 1

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
                    together=together,
                    members=workers,
                )
            else:
                await follow_replay(settings, pool, ends, share, handler, mark_started, workers)
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
