"""The placement feed's step of the README demo."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from rich.console import Console

from infra.config import Settings


async def demo_feed(settings: Settings, pool: asyncpg.Pool, out: Console) -> dict[str, int]:
    """Run the feed consumer until caught up, build the feeds of every closed simulated month, print one
    authority's feed summary and write its exports under ``artifacts/feeds/``, then build the ministry's
    roll-up of each fiscal year those months fall in (what the portal's ministry login shows).

    Returns counts: events applied, months built, revisions built (revision 2+ means late events), files,
    roll-ups built.
    """

    from consumers.catchup import run_until_caught_up
    from consumers.feed.builder import build_month, months_with_activity
    from consumers.feed.delivery import load_revision
    from consumers.feed.exports import export_feed, print_summary
    from consumers.feed.projection import FeedProjection
    from consumers.feed.rollup import build_rollup
    from domain.calendar import YearMonth, fiscal_year, month_bounds
    from domain.feed import is_closed

    applied = (await run_until_caught_up(FeedProjection(settings), settings, pool)).processed
    now = datetime.now(UTC)
    async with pool.acquire() as conn:
        months = [m for m in await months_with_activity(conn) if is_closed(m, settings.feed_cutoff_day, now)]
    built = []
    for month in months:
        built += await build_month(pool, settings, month, now=now)
    later = sum(b.revision > 1 for b in built)
    out.print(f"   feed: {applied} events applied, {len(built)} revisions built for {len(months)} months "
              f"({later} later revisions from events sent after the cutoff)")  # fmt: skip
    files: list[Path] = []
    if built:
        # The feed with the most published placements, as an example.
        sample = max(built, key=lambda b: (b.placements or 0, b.month))
        async with pool.acquire() as conn:
            row = await load_revision(conn, sample.authority, sample.month)
        print_summary(out, dict(row["body"]))
        root = Path("artifacts/feeds")
        for fmt, enc in (("json", "utf-8"), ("csv", "utf-8"), ("csv", "cp932")):
            paths, _ = await export_feed(settings, pool, sample.authority, sample.month, root, format=fmt,
                                         encoding=enc, purpose="demo", who="demo")  # fmt: skip
            files += paths
        out.print(f"   feed exports: {', '.join(str(p) for p in files)}")
    # The roll-up of each fiscal year, through the last month built in it (a year still under way
    # shows pace, a finished one its 全達成 / 一部達成 / 未達成 classes).
    through_of: dict[int, YearMonth] = {}
    for month in sorted(months):
        through_of[fiscal_year(month_bounds(month)[0])] = month
    for fy, through in sorted(through_of.items()):
        revision, _ = await build_rollup(pool, settings, fy, through)
        out.print(f"   ministry roll-up FY{fy} through {through}: revision {revision}")
    return {"events_applied": applied, "months": len(months), "revisions": len(built),
            "later_revisions": later, "files": len(files), "rollups": len(through_of)}  # fmt: skip
