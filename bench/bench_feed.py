"""Benchmark: build every placement feed of one month at national scale.

Scale (issue 5): about 1,700 authorities with 1–3 joint sites each (mean 1.9, as the simulator), 480,000
new registrations and 130,000 placements in the month, plus the placements of the earlier months whose
retention the month reports (1, 3 and 6 months back, 130,000 each) and their checkpoints. The rows are
generated directly in PostgreSQL (``bench.feed_month``: ``generate_series``, each value drawn from an md5
of the row's number and of what is drawn, so every database generated holds the same rows), not sent
through Kafka: the bench measures the builder, and the consumer has its own figures. 3% of the month's
placements arrive after the cutoff, so the build makes revision 1 for every feed and revision 2 for the
feeds those late placements change.

Figures printed: wall time of the national build (load, compose, keep, publish), with the CPU time of
this process and of its PostgreSQL sessions (the database counts the rows: its CPU is part of the
cost; the build counts revision 1 at the cutoff and revision 2 up to now from one reading,
``count_month_twice``); then the baseline measured in the same run: reading the month's facts for
revision 1, counted by the database (``count_month``, as the build counts: two sessions on one
snapshot) against the rows read as they are and split per authority in Python (``load_month``, the
reference the counting is tested against), and a raw scan of the same rows (``SELECT count(*)``), the floor of any reading; the ratios between them; peak memory
(RSS) of this process; a digest of everything built, compared with what main at 1e48702 built from the
same rows (``GOLDEN_DIGEST``); an incremental round after a few late
placements (``incremental``: only the marked feeds are counted and rebuilt). Without ``--no-pool`` the
build runs again with a process pool of ``os.cpu_count() - 1`` workers sharing the composing and the
publishing's checks with this process (started before the build, as the service's are; their CPU time is
printed too).

Run: ``.venv/bin/python bench/bench_feed.py [--reuse] [--no-pool]`` (uses database ``ittai_bench_feed`` and
topic namespace ``benchfeed``; both are recreated each run unless ``--reuse`` keeps the generated rows;
``--no-pool`` runs the sequential build only). ``HUB_PG_DATABASE`` names another database, e.g. to build the
same rows with two checkouts side by side, so that both see the same load (a copy of the generated
rows: ``CREATE DATABASE x TEMPLATE ittai_bench_feed``).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench.feed_month, run as a script
os.environ.setdefault("HUB_PG_DATABASE", "ittai_bench_feed")  # another name: runs side by side
os.environ["HUB_TOPIC_NAMESPACE"] = "benchfeed"
os.environ.setdefault("HUB_LOG_LEVEL", "WARNING")

import asyncpg

from bench.feed_month import CUTOFF, MONTH, generate
from consumers.feed.builder import COUNTING_SETTINGS, build_month, count_month, load_month
from domain.feed import cutoff_instant
from infra.config import Settings, get_settings
from infra.db import connect, create_pool, migrate, recreate_database
from infra.topics import ensure_topics


async def setup(settings: Settings) -> None:
    await recreate_database(settings)
    conn = await asyncpg.connect(settings.pg_dsn)
    try:
        await generate(conn)
        first = datetime(MONTH.year, MONTH.month, 1).date()
        # Marks as the consumer would leave them for the late placements.
        await conn.execute(
            "INSERT INTO feed_dirty (authority, month) SELECT site_authority, '2025-10' FROM feed_placements "
            "WHERE arrived_at > $1",
            CUTOFF,
        )
        await conn.execute("ANALYZE")
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM feed_registrations) r, (SELECT count(*) FROM feed_referrals) f, "
            "(SELECT count(*) FROM feed_placements WHERE placed_on >= $1) p, "
            "(SELECT count(*) FROM feed_placements) pall, (SELECT count(*) FROM feed_retention) t, "
            "(SELECT count(DISTINCT left(site, 6)) FROM feed_registrations) a, "
            "(SELECT count(DISTINCT site) FROM feed_registrations) s",
            first,
        )
        print(f"generated: {counts['a']} authorities, {counts['s']} sites, {counts['r']} registrations, "
              f"{counts['f']} referrals, {counts['p']} placements in {MONTH} "
              f"({counts['pall']} with the retention cohorts), {counts['t']} retention checkpoints")  # fmt: skip
    finally:
        await conn.close()


async def run_build(
    settings: Settings, pool: asyncpg.Pool, executor: ProcessPoolExecutor | None
) -> tuple[float, int, int]:
    # Each run starts from the same state: no revisions, the consumer's marks for the late placements.
    await pool.execute("DELETE FROM feed_revisions")
    await pool.execute("DELETE FROM feed_dirty")
    await pool.execute(
        "INSERT INTO feed_dirty (authority, month) SELECT site_authority, '2025-10' FROM feed_placements "
        "WHERE arrived_at > '2025-11-05 15:00+00'"
    )
    workers: list[int] = []
    if executor is not None:  # started before the build, as the service's are (the CLI's start on first use)
        executor.submit(int).result()
        workers = [p.pid for p in executor._processes.values() if p.pid is not None]  # type: ignore[attr-defined]
    started, cpu, server = time.perf_counter(), time.process_time(), await _server_cpu(pool)
    theirs = sum(_process_cpu(pid) for pid in workers)
    built = await build_month(pool, settings, MONTH, now=datetime.now(UTC), executor=executor)
    elapsed = time.perf_counter() - started
    # CPU time: on a shared machine the wall time also counts other programs' load.
    print(
        f"  (CPU time in the build: this process {time.process_time() - cpu:.2f} s, "
        + (
            f"its worker processes {sum(_process_cpu(pid) for pid in workers) - theirs:.2f} s, "
            if workers
            else ""
        )
        + f"its PostgreSQL sessions {_server_used(server, await _server_cpu(pool)):.2f} s)"
    )
    return elapsed, sum(b.revision == 1 for b in built), sum(b.revision > 1 for b in built)


# What main at 1e48702 (the start of session 11) built from this bench's rows: every revision's body
# (less its horizon, which is the build's clock), hidden cells, placement ids, changes and tallies. A
# faster build must print the same. Taken on the rows bench.feed_month generates (values drawn from md5,
# 2026-11-28), which every database generated from it holds; 1e48702 built them with only the generation
# changed in its bench, and main at 7392523 built the same on a database generated apart. The digests
# before (6b8fc183…/ec1d2fcc…, from 015b552's code) were of rows drawn by random() after a setseed, whose
# draws followed the plan's row order: only the one database they were taken on held those rows.
GOLDEN_DIGEST = "1: 1700 b21551ab3419386c3b30c3811d2d33a0; 2: 1399 2a377930a9b8b0be4733eb4e211089d2"


async def _digest(pool: asyncpg.Pool) -> str:
    """The golden comparison on the national month: an md5 over everything each revision keeps (as jsonb
    prints it: the columns kept as written, migration 018, compare by what they hold)."""
    rows = await pool.fetch(
        "SELECT revision, count(*) AS n, md5(string_agg((body::jsonb - 'horizon')::text || suppressed::jsonb::text "
        "|| placement_ids::text || changes::jsonb::text || tallies::text, '|' ORDER BY authority)) AS md5 "
        "FROM feed_revisions WHERE month = $1 GROUP BY revision ORDER BY revision",
        str(MONTH),
    )
    digest = "; ".join(f"{r['revision']}: {r['n']} {r['md5']}" for r in rows)
    return f"{digest} ({'same as' if digest == GOLDEN_DIGEST else 'DIFFERENT from'} main at 1e48702)"


async def _server_cpu(pool: asyncpg.Pool) -> dict[int, float]:
    """CPU seconds used so far by each PostgreSQL session of the bench's database (its own client
    backends; the server runs on this machine), by PID. Parallel query workers are not counted."""
    pids = await pool.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'"
    )
    return {r["pid"]: _process_cpu(r["pid"]) for r in pids}


def _server_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU the sessions used between two readings: each session's own difference, a session opened in
    between counted from zero. (A sum of totals went wrong, even below zero, when the build's pool replaced
    a connection or opened a second one for counting beside the first: 750b588.) A session that closed in
    between is not counted after its last reading."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def _process_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:  # a session that ended in between
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


async def _timed(pool: asyncpg.Pool, read: object) -> tuple[float, float, float]:
    """(wall, CPU of this process, CPU of its PostgreSQL sessions) of one read of the month."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        await conn.execute(COUNTING_SETTINGS)
        started, cpu, server = time.perf_counter(), time.process_time(), await _server_cpu(pool)
        await read(conn)  # type: ignore[operator]
        return (
            time.perf_counter() - started,
            time.process_time() - cpu,
            _server_used(server, await _server_cpu(pool)),
        )


async def baseline(settings: Settings, pool: asyncpg.Pool) -> None:
    """Reading the month for revision 1, three ways, in this run: the database counts (the build's
    way), the rows split in Python (the reference), a raw scan (the floor)."""
    cutoff = cutoff_instant(MONTH, settings.feed_cutoff_day)

    async def raw(conn: asyncpg.Connection) -> None:
        await conn.fetchval(
            "SELECT (SELECT count(*) FROM feed_placements WHERE placed_on >= '2025-04-01') "
            "+ (SELECT count(*) FROM feed_registrations) + (SELECT count(*) FROM feed_referrals) "
            "+ (SELECT count(*) FROM feed_retention)"
        )

    figures = {
        "counted by the database (count_month)": await _timed(
            pool, lambda c: count_month(c, MONTH, cutoff, beside=pool)
        ),
        "rows split in Python (load_month)": await _timed(pool, lambda c: load_month(c, MONTH, cutoff)),
        "raw scan of the same rows (count(*))": await _timed(pool, raw),
    }
    print("baseline, reading the month for revision 1 (wall / CPU here / CPU in PostgreSQL):")
    for name, (wall, cpu, server) in figures.items():
        print(f"  {name:40s} {wall:6.2f} s / {cpu:6.2f} s / {server:6.2f} s")
    (w_new, c_new, s_new), (w_old, c_old, s_old), (w_raw, _, _) = figures.values()
    print(
        f"  ratio counted / split in Python: wall {w_new / w_old:.2f}x, CPU (both sides) "
        f"{(c_new + s_new) / (c_old + s_old):.2f}x; counted / raw scan: wall {w_new / w_raw:.2f}x"
    )


async def incremental(settings: Settings, pool: asyncpg.Pool, feeds: int = 5) -> None:
    """A later round of the same month: a late placement for each of a few authorities, kept and marked
    as the consumer would, then a build. Only the marked feeds are counted and rebuilt (the round before
    counted the whole month twice: at the cutoff, for nobody, and up to now for the marked feeds).
    The rows it adds are removed again, so a ``--reuse`` run starts from the same month."""
    authorities = [
        r["authority"]
        for r in await pool.fetch(
            "SELECT DISTINCT authority FROM feed_revisions WHERE month = $1 ORDER BY authority LIMIT $2",
            str(MONTH),
            feeds,
        )
    ]
    try:
        await pool.execute(
            "INSERT INTO feed_placements (placement_id, person_key, site, site_authority, placed_on, route, "
            "occupation, classification_version, employment_type, sex, age_band, attributes, personal, arrived_at) "
            "SELECT 'bench-late-' || a, md5('bench-late-' || a), a || '-01', a, $2::date, 'hello_work_referral', "
            "'05', 'MHLW-2022', 'part_time', 'female', '40-44', '{}', '{}', now() FROM unnest($1::text[]) AS a",
            authorities,
            datetime(MONTH.year, MONTH.month, 15).date(),
        )
        await pool.execute(
            "INSERT INTO feed_dirty (authority, month) SELECT a, $2 FROM unnest($1::text[]) AS a",
            authorities,
            str(MONTH),
        )
        started, cpu, server = time.perf_counter(), time.process_time(), await _server_cpu(pool)
        built = await build_month(pool, settings, MONTH, now=datetime.now(UTC))
        print(
            f"incremental round ({len(authorities)} feeds marked by late placements): "
            f"{time.perf_counter() - started:.2f} s, CPU here {time.process_time() - cpu:.2f} s, "
            f"in PostgreSQL {_server_used(server, await _server_cpu(pool)):.2f} s; revisions built: "
            f"{sorted(b.revision for b in built)}"
        )
    finally:
        await pool.execute("DELETE FROM feed_placements WHERE placement_id LIKE 'bench-late-%'")
        await pool.execute("DELETE FROM feed_dirty WHERE month = $1", str(MONTH))


def _rss_mb(who: int) -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(who).ru_maxrss / 1024


async def main() -> None:
    settings = get_settings()
    t0 = time.perf_counter()
    if "--reuse" not in sys.argv:  # --reuse: keep the rows generated by the previous run
        await setup(settings)
    else:  # the kept rows, under this checkout's schema
        conn = await connect(settings)
        try:
            await migrate(conn)
        finally:
            await conn.close()
    await ensure_topics(settings, [settings.feed_topic])
    print(f"setup (not timed): {time.perf_counter() - t0:.1f} s")
    pool = await create_pool(settings, max_size=4)
    try:
        # This process composes a share of each chunk too (``builder._compose_all``): one core each.
        workers = max(1, (os.cpu_count() or 1) - 1)
        seq, r1, r2 = await run_build(settings, pool, None)
        print(f"national build, sequential:  {seq:6.2f} s  ({r1} revision-1 feeds, {r2} revision-2 feeds)")
        print(f"digest of what was built (revision: feeds, md5): {await _digest(pool)}")
        print(f"target: <= 5 s for the national build -> {'met' if seq <= 5 else 'NOT met'}")
        print(f"peak RSS of this process after the build: {_rss_mb(resource.RUSAGE_SELF):.0f} MiB")
        await incremental(settings, pool)
        await baseline(settings, pool)
        if "--no-pool" in sys.argv:  # --no-pool: the sequential build only
            return
        # forkserver: a forked worker would inherit (and, as its GC walks them, copy) the parent's loaded rows.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) as executor:
            par, r1p, r2p = await run_build(settings, pool, executor)
        print(
            f"process pool ({workers} workers):    {par:6.2f} s  ({r1p} revision-1 feeds, {r2p} revision-2 feeds)"
        )
        print(f"digest of what the pool built: {await _digest(pool)}")
        print(f"ratio sequential / pool:     {seq / par:6.2f}x")
        print(
            f"peak RSS of this process (it counts, and composes the sequential run; the baseline loads the "
            f"rows): {_rss_mb(resource.RUSAGE_SELF):.0f} MiB; pool workers are forkserver children, not counted"
        )
    finally:
        await pool.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
