"""Building feed revisions: load the projection as of a horizon, compose, keep, publish.

Closing and revisions: revision 1 of a month counts what was sent by the end of its cutoff day (JST,
``settings.feed_cutoff_day`` of the next month), whenever the build runs. Each later build counts what
was sent up to now; if a published figure or the set of placements differs from the latest revision,
that is revision N+1 with a change summary. "Sent" is the event's CloudEvents ``time`` (when the source
system emitted it), not when the hub consumed it, so a replay of the topics rebuilds the same revisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import partial
from typing import Any

import asyncpg
import orjson

from domain.calendar import YearMonth, month_bounds
from domain.feed import (
    RETENTION_CHECKPOINTS,
    Composed,
    FeedInput,
    Job,
    PlacementFact,
    RegistrationFact,
    SiteTargets,
    YearToDate,
    change_summary,
    compose_many,
    counts_for,
    cutoff_instant,
    figures,
    fiscal_months,
    shift_month,
)
from infra.config import Settings
from infra.kafka import start_producer
from infra.logging import get_logger

log = get_logger("feed")


class FeedNotClosed(Exception):
    def __init__(self, month: YearMonth, closes_at: datetime) -> None:
        super().__init__(f"month {month} is not closed yet: it closes at {closes_at.isoformat()}")


@dataclass(frozen=True)
class Built:
    authority: str
    month: str
    revision: int
    placements: int | None
    changes: list[dict[str, Any]]


@dataclass
class _Loaded:
    inputs: dict[str, FeedInput]
    placement_ids: dict[str, list[str]]


@dataclass
class _Rows:
    """The projection rows of one month and its retention cohorts, each with when it was sent."""

    month: YearMonth
    placements: list[asyncpg.Record]  # placed in the month, every column the tables count
    cohort_placements: list[asyncpg.Record]  # placed in a retention cohort month: who counts them
    registrations: list[asyncpg.Record]
    referrals: list[asyncpg.Record]
    sites: list[asyncpg.Record]
    retention: list[asyncpg.Record]


def _cohort_bounds(month: YearMonth) -> dict[int, tuple[date, date]]:
    return {k: month_bounds(shift_month(month, -k)) for k in RETENTION_CHECKPOINTS}


async def fetch_month(conn: asyncpg.Connection, month: YearMonth, horizon: datetime) -> _Rows:
    """Read what the month's feeds need, and only that: the cohort months' placements without the
    columns the tables count, and only the retention checkpoint each cohort reports."""
    first, last = month_bounds(month)
    cohorts = _cohort_bounds(month)
    ks = list(cohorts)
    los = [lo for lo, _ in cohorts.values()]
    his = [hi for _, hi in cohorts.values()]
    placements = await conn.fetch(
        "SELECT placement_id, person_key, site, site_authority, placed_on, route, occupation, employment_type, "
        "sex, age_band, attributes, arrived_at FROM feed_placements "
        "WHERE placed_on BETWEEN $1 AND $2 AND arrived_at <= $3",
        first,
        last,
        horizon,
    )
    cohort_placements = await conn.fetch(
        "SELECT p.placement_id, p.person_key, p.site, p.site_authority, c.k, p.arrived_at "
        "FROM unnest($1::int[], $2::date[], $3::date[]) AS c(k, lo, hi) "
        "JOIN feed_placements p ON p.placed_on BETWEEN c.lo AND c.hi WHERE p.arrived_at <= $4",
        ks,
        los,
        his,
        horizon,
    )
    registrations = await conn.fetch(
        "SELECT person_key, authority, site, registered_on, team_support, arrived_at FROM feed_registrations "
        "WHERE registered_on BETWEEN $1 AND $2 AND arrived_at <= $3",
        first,
        last,
        horizon,
    )
    referrals = await conn.fetch(
        "SELECT person_key, authority, arrived_at FROM feed_referrals WHERE arrived_at <= $1 AND referred_on <= $2",
        horizon,
        last,
    )
    sites = await conn.fetch(
        "SELECT site, min(arrived_at) AS arrived_at FROM (SELECT site, min(arrived_at) AS arrived_at "
        "FROM feed_registrations GROUP BY site UNION ALL SELECT site, min(arrived_at) FROM feed_placements "
        "GROUP BY site UNION ALL SELECT site, min(arrived_at) FROM feed_referrals GROUP BY site) x "
        "WHERE arrived_at <= $1 GROUP BY site",
        horizon,
    )
    retention = await conn.fetch(
        "SELECT r.placement_id, r.checkpoint_months, r.status, r.arrived_at "
        "FROM unnest($2::int[], $3::date[], $4::date[]) AS c(k, lo, hi) "
        "JOIN feed_placements p ON p.placed_on BETWEEN c.lo AND c.hi "
        "JOIN feed_retention r ON r.placement_id = p.placement_id AND r.checkpoint_months = c.k "
        "WHERE r.arrived_at <= $1",
        horizon,
        ks,
        los,
        his,
    )
    return _Rows(month, placements, cohort_placements, registrations, referrals, sites, retention)


async def load_month(conn: asyncpg.Connection, month: YearMonth, horizon: datetime) -> _Loaded:
    """Every authority's facts for ``month`` as sent by ``horizon`` (national: one pass, then split)."""
    with _gc_paused():
        return assemble(await fetch_month(conn, month, horizon), horizon)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a build holds a month's rows.

    The rows and the facts made from them are millions of objects that live until the build ends;
    with the collector running, every full collection walks all of them again (measured on the
    national bench: reading the month took 3 s without it and 7-9 s with it). What the build
    allocates is freed by reference counting, so the pause costs no memory; the collector resumes
    when the build ends.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def assemble(rows: _Rows, horizon: datetime, keep: Callable[[str], bool] | None = None) -> _Loaded:
    """Split the month's rows, as sent by ``horizon``, into each authority's feed input (every
    authority with facts, or those ``keep`` accepts)."""
    month = rows.month
    referrers: dict[str, set[str]] = defaultdict(set)
    for r in rows.referrals:
        if r["arrived_at"] <= horizon:
            referrers[r["person_key"]].add(r["authority"])
    referred_by: dict[str, frozenset[str]] = {p: frozenset(a) for p, a in referrers.items()}
    sites: dict[str, list[str]] = defaultdict(list)
    for r in rows.sites:
        if r["arrived_at"] <= horizon:
            sites[r["site"][:6]].append(r["site"])

    def owners(p: asyncpg.Record) -> Iterable[str]:
        """The authorities a placement counts for (``counts_for``), among those wanted."""
        site = p["site"]
        home = p["site_authority"]
        refs = referred_by.get(p["person_key"])
        if refs is None:  # most people: only the authority of the site can count them
            return (home,) if counts_for(home, site, ()) and (keep is None or keep(home)) else ()
        return [a for a in {home, *refs} if (keep is None or keep(a)) and counts_for(a, site, refs)]

    current: dict[str, list[PlacementFact]] = defaultdict(list)
    placement_ids: dict[str, list[str]] = defaultdict(list)
    for p in rows.placements:
        if p["arrived_at"] > horizon:
            continue
        counted = owners(p)
        if not counted:
            continue
        fact = PlacementFact(
            placement_id=p["placement_id"],
            person_key=p["person_key"],
            site=p["site"],
            placed_on=p["placed_on"],
            route=p["route"],
            occupation=p["occupation"],
            employment_type=p["employment_type"],
            sex=p["sex"],
            age_band=p["age_band"],
            attributes=tuple(p["attributes"]),
        )
        for authority in counted:
            current[authority].append(fact)
            placement_ids[authority].append(fact.placement_id)
    cohorts: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for p in rows.cohort_placements:
        if p["arrived_at"] <= horizon:
            for authority in owners(p):
                cohorts[authority][p["k"]].append(p["placement_id"])
    regs: dict[str, list[RegistrationFact]] = defaultdict(list)
    for g in rows.registrations:
        authority = g["authority"]
        if g["arrived_at"] > horizon or (keep is not None and not keep(authority)):
            continue
        refs = referred_by.get(g["person_key"])
        regs[authority].append(
            RegistrationFact(
                g["person_key"],
                g["site"],
                g["registered_on"],
                g["team_support"],
                refs is not None and authority in refs,
            )
        )
    status = {
        (r["placement_id"], r["checkpoint_months"]): r["status"]
        for r in rows.retention
        if r["arrived_at"] <= horizon
    }
    inputs: dict[str, FeedInput] = {}
    for authority in set(current) | set(regs):
        cohort = {k: tuple(v) for k, v in cohorts[authority].items()}
        inputs[authority] = FeedInput(
            authority=authority,
            month=month,
            sites=tuple(sorted(sites.get(authority, ()))),
            placements=tuple(current[authority]),
            registrations=tuple(regs[authority]),
            cohorts=cohort,
            retention={
                (pid, k): status[(pid, k)] for k, ids in cohort.items() for pid in ids if (pid, k) in status
            },
        )
    return _Loaded(inputs, placement_ids)


async def _targets(
    conn: asyncpg.Connection, month: YearMonth, horizon: datetime
) -> tuple[dict[str, list[SiteTargets]], dict[str, YearToDate]]:
    start, end = fiscal_months(month)
    rows = await conn.fetch(
        "SELECT site, fiscal_year, placements, referral_share, team_support FROM feed_targets "
        "WHERE fiscal_year = $1 ORDER BY site",
        start.year,
    )
    by_authority: dict[str, list[SiteTargets]] = defaultdict(list)
    for r in rows:
        share = r["referral_share"]
        by_authority[r["site"][:6]].append(
            SiteTargets(
                r["site"],
                r["fiscal_year"],
                r["placements"],
                float(share) if share is not None else None,
                r["team_support"],
            )
        )
    if not rows:
        return {}, {}
    sites = [r["site"] for r in rows]
    ytd_rows = await conn.fetch(
        "SELECT s.site, "
        "(SELECT count(*) FROM feed_placements p WHERE p.site = s.site AND p.placed_on BETWEEN $2 AND $3 "
        " AND p.arrived_at <= $4) AS placements, "
        "(SELECT count(*) FROM feed_registrations g WHERE g.site = s.site AND g.registered_on BETWEEN $2 AND $3 "
        " AND g.arrived_at <= $4) AS registrations, "
        "(SELECT count(*) FROM feed_registrations g WHERE g.site = s.site AND g.registered_on BETWEEN $2 AND $3 "
        " AND g.arrived_at <= $4 AND EXISTS (SELECT 1 FROM feed_referrals f WHERE f.person_key = g.person_key "
        " AND f.authority = g.authority AND f.referred_on <= $3 AND f.arrived_at <= $4)) AS referred, "
        "(SELECT count(*) FROM feed_registrations g WHERE g.site = s.site AND g.registered_on BETWEEN $2 AND $3 "
        " AND g.arrived_at <= $4 AND g.team_support) AS team "
        "FROM unnest($1::text[]) AS s(site)",
        sites,
        start,
        end,
        horizon,
    )
    ytd = {
        r["site"]: YearToDate(r["placements"], r["registrations"], r["referred"], r["team"]) for r in ytd_rows
    }
    return by_authority, ytd


async def _compose_all(
    jobs: list[tuple[FeedInput, dict[str, Any] | None, list[SiteTargets], dict[str, YearToDate]]],
    threshold: int,
    executor: Executor | None,
) -> list[Composed]:
    if executor is None or len(jobs) < 50:
        return _compose_chunk(jobs, threshold)
    loop = asyncio.get_running_loop()
    # Chunks amortise pickling; the disclosure layouts are cached per worker process.
    size = max(1, len(jobs) // (4 * (os.cpu_count() or 1)))
    chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
    results = await asyncio.gather(
        *(loop.run_in_executor(executor, partial(_compose_chunk, c, threshold)) for c in chunks)
    )
    return [c for chunk in results for c in chunk]


def _compose_chunk(
    jobs: list[tuple[FeedInput, dict[str, Any] | None, list[SiteTargets], dict[str, YearToDate]]],
    threshold: int,
) -> list[Composed]:
    return compose_many(
        [Job(f, p, t, y) for f, p, t, y in jobs],
        threshold=threshold,
    )


async def build_month(
    pool: asyncpg.Pool,
    settings: Settings,
    month: YearMonth,
    *,
    now: datetime | None = None,
    authorities: Sequence[str] | None = None,
    executor: Executor | None = None,
    fence: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
) -> list[Built]:
    """Build every due revision of ``month`` (all authorities, or those listed); returns what was built.

    Due: revision 1 where a feed has none yet; revision N+1 where the consumer marked the feed since
    (``feed_dirty``) and a published figure or the set of placements changed. One repeatable-read
    snapshot covers marks and facts, so a mark committed during the build survives to the next round.
    """
    now = now or datetime.now(UTC)
    cutoff = cutoff_instant(month, settings.feed_cutoff_day)
    if now < cutoff:
        raise FeedNotClosed(month, cutoff)
    wanted = set(authorities) if authorities else None
    built: list[Built] = []
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        if fence is not None:  # the running builder proves it leads (infra.leadership) before writing
            await fence(conn)
        with _gc_paused():
            built += await _build_in_snapshot(conn, settings, month, now, cutoff, wanted, executor)
    if built:
        await publish_pending(pool, settings)
    return built


async def _build_in_snapshot(
    conn: asyncpg.Connection,
    settings: Settings,
    month: YearMonth,
    now: datetime,
    cutoff: datetime,
    wanted: set[str] | None,
    executor: Executor | None,
) -> list[Built]:
    built: list[Built] = []
    latest = await _latest(conn, str(month), wanted)
    marks = await conn.fetch("SELECT id, authority FROM feed_dirty WHERE month = $1", str(month))
    marks = [m for m in marks if wanted is None or m["authority"] in wanted]
    # One read of the month serves both horizons.
    rows = await fetch_month(conn, month, max(now, cutoff))
    # Revision 1: what was sent by the cutoff, for feeds that have none yet.
    old = set(latest)
    loaded = assemble(rows, cutoff, lambda a: a not in old and (wanted is None or a in wanted))
    # Only feeds with facts: building one authority gives exactly what building all gives it (an
    # authority with nothing sent by the cutoff is not handed an empty revision 1 here; the backfill
    # below makes its revision 1, as it would in a national build).
    fresh = set(loaded.inputs)
    if fresh:
        built += await _make_revisions(conn, settings, month, cutoff, loaded, sorted(fresh), latest, executor)
        latest = await _latest(conn, str(month), wanted)
    # Backfill: a feed whose every fact was sent after the cutoff (an authority joining the hub, or its
    # history loaded later) gets revision 1 from what has been sent so far, not an empty report.
    if now > cutoff:
        have = set(latest)
        backfilled = assemble(rows, now, lambda a: a not in have and (wanted is None or a in wanted))
        if backfilled.inputs:
            first = sorted(backfilled.inputs)
            built += await _make_revisions(conn, settings, month, now, backfilled, first, latest, executor)
            latest = await _latest(conn, str(month), wanted)
    # Later revisions: everything sent up to now, where something arrived since.
    if now > cutoff:
        due = sorted({m["authority"] for m in marks if m["authority"] in latest})
        if due:
            loaded = assemble(rows, now, set(due).__contains__)
            built += await _make_revisions(conn, settings, month, now, loaded, due, latest, executor)
        await conn.execute("DELETE FROM feed_dirty WHERE id = ANY($1::bigint[])", [m["id"] for m in marks])
    return built


async def _latest(conn: asyncpg.Connection, month: str, wanted: set[str] | None) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch(
        "SELECT DISTINCT ON (authority) authority, revision, horizon, body, suppressed, placement_ids "
        "FROM feed_revisions WHERE month = $1 ORDER BY authority, revision DESC",
        month,
    )
    return {r["authority"]: r for r in rows if wanted is None or r["authority"] in wanted}


async def _make_revisions(
    conn: asyncpg.Connection,
    settings: Settings,
    month: YearMonth,
    horizon: datetime,
    loaded: _Loaded,
    authorities: list[str],
    latest: dict[str, asyncpg.Record],
    executor: Executor | None,
) -> list[Built]:
    targets, ytd = await _targets(conn, month, horizon)
    jobs = []
    for a in sorted(authorities):
        feed = loaded.inputs.get(a) or FeedInput(a, month, (), (), ())
        prev = latest.get(a)
        jobs.append(
            (
                feed,
                prev["body"] if prev else None,
                targets.get(a, []),
                {t.site: ytd[t.site] for t in targets.get(a, []) if t.site in ytd},
            )
        )
    composed = await _compose_all(jobs, settings.feed_suppression_threshold, executor)
    rows = []
    built = []
    for (feed, _, _, _), c in zip(jobs, composed, strict=True):
        a = feed.authority
        prev = latest.get(a)
        ids = sorted(loaded.placement_ids.get(a, []))
        if prev is not None:
            changes = change_summary(figures(prev["body"]), c.figures)
            if not changes and ids == sorted(prev["placement_ids"]):
                continue
        else:
            changes = []
        revision = (prev["revision"] if prev else 0) + 1
        body = dict(c.body, revision=revision, horizon=horizon.isoformat(), changes=changes)
        rows.append((a, str(month), revision, horizon, body, c.suppressed, ids, changes))
        built.append(Built(a, str(month), revision, body["indicators"]["authority"]["placements"], changes))
    async with conn.transaction():
        await conn.executemany(
            "INSERT INTO feed_revisions (authority, month, revision, horizon, body, suppressed, placement_ids, "
            "changes) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) ON CONFLICT DO NOTHING",
            rows,
        )
    return built


async def publish_pending(pool: asyncpg.Pool, settings: Settings) -> int:
    """Publish kept revisions not yet on ``settings.feed_topic`` (aggregates only), then stamp them."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT authority, month, revision, body FROM feed_revisions WHERE published_at IS NULL "
            "ORDER BY month, authority, revision"
        )
        if not rows:
            return 0
        producer = await start_producer(
            settings,
            max_request_size=8 * 1024 * 1024,
            # A body is about 20 KB: with the default 16 KB batches each would be a request of its own.
            max_batch_size=1024 * 1024,
            linger_ms=5,
        )
        try:
            futures = [
                await producer.send(
                    settings.feed_topic,
                    key=f"{r['authority']}:{r['month']}".encode(),
                    value=orjson.dumps(r["body"]),
                    headers=[("feed_revision", str(r["revision"]).encode())],
                )
                for r in rows
            ]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        await conn.execute(
            "UPDATE feed_revisions f SET published_at = now() "
            "FROM unnest($1::text[], $2::text[], $3::int[]) AS p(authority, month, revision) "
            "WHERE f.authority = p.authority AND f.month = p.month AND f.revision = p.revision",
            [r["authority"] for r in rows],
            [r["month"] for r in rows],
            [r["revision"] for r in rows],
        )
    return len(rows)


async def months_with_activity(conn: asyncpg.Connection) -> list[YearMonth]:
    rows = await conn.fetch(
        "SELECT DISTINCT to_char(placed_on, 'YYYY-MM') AS m FROM feed_placements UNION "
        "SELECT DISTINCT to_char(registered_on, 'YYYY-MM') FROM feed_registrations ORDER BY 1"
    )
    return [YearMonth(int(r["m"][:4]), int(r["m"][5:])) for r in rows]
