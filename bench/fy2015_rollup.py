"""FY2015 through the hub, then the ministry's roll-up next to the report's own figures.

The ``fy2015`` simulator profile (159 authorities, 303 sites, four warm-up months and the fiscal year
April 2015 – March 2016) is sent through the outbox and Kafka to the feed consumer; the steering
councils' targets and the units left out of the evaluation go into the feed's tables; every month is
built at its cutoff (revision 1) and again after the late events (revision 2); then the roll-up of
FY2015 is built and its headline shapes are printed beside the report's (``shared/seed/…`` lines),
each with the tolerance it is held to and whether it is within it.

``--direct`` hands the events to the feed consumer's handler in batches without Kafka (the same
projection code, for a machine where a million events through the broker take too long); the output
says which path was used.

Run: ``.venv/bin/python bench/fy2015_rollup.py [--reuse] [--direct] [--out DIR]`` (database ``ittai_bench_fy2015``,
topic namespace ``benchfy2015``; recreated each run unless ``--reuse`` keeps what was loaded).
``--out DIR`` also writes the roll-up as CSV (CP932) and an Excel workbook.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HUB_PG_DATABASE", "ittai_bench_fy2015")
os.environ.setdefault("HUB_TOPIC_NAMESPACE", "benchfy2015")
os.environ.setdefault("HUB_LOG_LEVEL", "WARNING")

from aiokafka.errors import KafkaError

from consumers.catchup import run_until_caught_up
from consumers.feed.builder import build_month
from consumers.feed.exports import write_rollup
from consumers.feed.projection import FeedProjection
from consumers.feed.rollup import build_rollup
from devtools.simulator import SimulationConfig, fy2015_evaluation, read_jsonl, simulate, write_jsonl
from domain.calendar import YearMonth
from domain.feed import cutoff_instant, shift_month
from infra.config import get_settings
from infra.db import create_pool, recreate_database
from infra.runner import prepare
from infra.topics import ensure_topics
from producers.publish import publish_submissions
from producers.submission import Submission

# (figure, report value, seed line, tolerance as a fraction of the report's value or absolute points)
REPORT = {
    "placements": (78_869, "~l.9", 0.05),
    "welfare_share": (17_569 / 78_869, "~l.9–10", 0.02),
    "placement_rate": (0.367, "~l.102, 107", 0.03),
    "sites_evaluated": (273, "~l.15, 66", 0),
    "sites_achieved": (234 / 273, "~l.67–68", 0.05),
    "sites_all_met": (138 / 273, "~l.70–71", 0.06),
    "sites_partly_met": (96 / 273, "~l.73–74", 0.06),
    "sites_none_met": (39 / 273, "~l.76–77", 0.06),
    "authorities_evaluated": (154, "~l.12", 0),
    "authorities_achieved": (139 / 154, "~l.14", 0.06),
}


STREAM = Path(os.environ.get("FY2015_STREAM", "/tmp/ittai_fy2015.jsonl"))


def stream(config: SimulationConfig) -> list[Submission]:
    """The profile's stream, generated once into ``STREAM`` (the same seed gives the same bytes)."""
    if not STREAM.exists():
        write_jsonl(simulate(config), STREAM)
    return list(read_jsonl(STREAM))


async def load(settings: object) -> None:
    config = SimulationConfig.fy2015()
    started = time.perf_counter()
    subs = stream(config)
    print(f"simulated {len(subs)} events in {time.perf_counter() - started:.0f} s ({STREAM})")
    pool = await prepare(settings)  # type: ignore[arg-type]
    if "--direct" in sys.argv:
        try:
            await _direct(settings, pool, subs)
            await _targets_and_builds(settings, pool, config, publish=False)  # no broker on this path
        finally:
            await pool.close()
        return
    try:
        for attempt in range(30):  # the broker may be restarting; the outbox itself waits for it
            try:
                await ensure_topics(settings)  # type: ignore[arg-type]
                break
            except KafkaError:
                await asyncio.sleep(2 + attempt)
        started = time.perf_counter()
        await publish_submissions(settings, pool, subs, origin="fy2015")  # type: ignore[arg-type]
        print(f"published through the outbox in {time.perf_counter() - started:.0f} s")
        started = time.perf_counter()
        applied = (await run_until_caught_up(FeedProjection(settings), settings, pool)).processed  # type: ignore[arg-type]
        print(f"feed consumer applied {applied} events in {time.perf_counter() - started:.0f} s")
        await _targets_and_builds(settings, pool, config)
    finally:
        await pool.close()


async def _direct(settings: object, pool: Any, subs: list[Submission]) -> None:
    """The feed consumer's handler applied to the events in batches, as the runtime would, without Kafka."""
    from consumers.runtime import Consumed
    from contracts.envelope import encode
    from producers.submission import to_event

    started = time.perf_counter()
    key = os.urandom(32)  # one throwaway data key: the roll-up reads no personal field
    projection = FeedProjection(settings)  # type: ignore[arg-type]
    for at in range(0, len(subs), 2000):
        events = [to_event(s, key) for s in subs[at : at + 2000]]
        # The record's value as Kafka would carry it: consumers plan from the JSON as received.
        batch = [Consumed(e, "direct", 0, at + i, encode(e)[2]) for i, e in enumerate(events)]
        async with pool.acquire() as conn, conn.transaction():
            await projection.handle(conn, batch)
    print(
        f"feed consumer's handler applied {len(subs)} events directly in {time.perf_counter() - started:.0f} s"
    )


async def _targets_and_builds(
    settings: Any, pool: Any, config: SimulationConfig, *, publish: bool = True
) -> None:
    """The councils' targets and exclusions, then every month at its cutoff and again after late events."""
    targets, excluded = fy2015_evaluation(config)
    await pool.executemany(
        "INSERT INTO feed_target_values (scope, fiscal_year, kind, value) VALUES ($1,$2,$3,$4)", targets
    )
    await pool.executemany(
        "INSERT INTO feed_evaluation_exclusions (scope, fiscal_year, reason) VALUES ($1, 2015, $2)",
        [
            (x, "new this year" if x[:6] not in ("430005", "431001") else "Kumamoto (earthquake)")
            for x in excluded
        ],
    )
    started = time.perf_counter()
    months = [shift_month(YearMonth(2014, 12), k) for k in range(16)]
    for m in months:  # revision 1 at each month's cutoff, in order (year-to-date results build on them)
        await build_month(pool, settings, m, now=cutoff_instant(m, settings.feed_cutoff_day), publish=publish)
    for m in months:  # then what was sent later
        await build_month(pool, settings, m, now=datetime.now(UTC), publish=publish)
    print(f"built every month's feeds in {time.perf_counter() - started:.0f} s")


def verdict(name: str, measured: float) -> str:
    value, line, tol = REPORT[name]
    ok = abs(measured - value) <= (tol * value if name == "placements" else tol)
    fmt = (lambda v: f"{v:,.0f}") if value > 1 else (lambda v: f"{100 * v:.1f}%")
    tol_text = (
        "exact" if tol == 0 else (f"±{100 * tol:.0f}%" if name == "placements" else f"±{100 * tol:.0f} pt")
    )
    return f"{name:24} report {fmt(value):>9} ({line:12}) hub {fmt(measured):>9}  {tol_text:7} {'OK' if ok else 'OUT'}"


async def main() -> None:
    settings = get_settings()
    if "--reuse" not in sys.argv:
        await recreate_database(settings)
        await load(settings)
    pool = await create_pool(settings, max_size=4)
    try:
        revision, body = await build_rollup(pool, settings, 2015)
    finally:
        await pool.close()
    national = body["indicators"]["national"]
    sites = body["achievement"]["sites"]["計"]
    auths = body["achievement"]["authorities"]["計"]
    s_eval = sites["all_met"] + sites["partly_met"] + sites["none_met"]
    a_eval = auths["all_met"] + auths["partly_met"] + auths["none_met"]
    print(f"\nroll-up FY2015 revision {revision}: national figures beside the report's")
    print(verdict("placements", national["referral_placements"]))
    print(verdict("welfare_share", national["by_group"]["welfare"]["share"]))
    print(verdict("placement_rate", national["placement_rate"]))
    print(verdict("sites_evaluated", s_eval))
    print(verdict("sites_achieved", (sites["all_met"] + sites["partly_met"]) / s_eval))
    for c in ("all_met", "partly_met", "none_met"):
        print(verdict(f"sites_{c}", sites[c] / s_eval))
    print(verdict("authorities_evaluated", a_eval))
    print(verdict("authorities_achieved", (auths["all_met"] + auths["partly_met"]) / a_eval))
    print("\nplacements (紹介就職) by target group, national (a person counts in every group):")
    for g, v in national["by_group"].items():
        print(f"  {g:12} {v['referral_placements']!s:>7}  {100 * (v['share'] or 0):5.1f}%")
    print(
        f"  distinct people {national['referral_placements']}; 自己就職 beside it: {national['self_found_placements']}"
    )
    print(f"連携指標: new job seekers {national['new_job_seekers']}, referred share {national['referral_share']}, "
          f"team support (new) {national['team_support']}")  # fmt: skip
    if "--out" in sys.argv:
        out = Path(sys.argv[sys.argv.index("--out") + 1])
        for p in write_rollup(body, out, "cp932"):
            print(f"wrote {p}")


if __name__ == "__main__":
    asyncio.run(main())
