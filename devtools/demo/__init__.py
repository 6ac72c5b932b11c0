"""The README's demo: a fresh machine to a working hub, end to end, with a short printed summary.

simulator → adapters (HTTP + CSV, as client systems would) → outbox → Kafka → consumers (event log,
shared view, placement feed) → PostgreSQL → operator console.
"""

from __future__ import annotations

import asyncio
import os
import time

from rich.console import Console
from rich.table import Table

from devtools import stack
from infra.config import Settings, get_settings
from infra.logging import configure_logging
from infra.runner import prepare
from infra.topics import ensure_topics

out = Console()


def run_demo(*, authorities: int, months: int, seed: int, serve: bool) -> None:
    # The demo runs on the local development stack, with its public demo key and database password.
    os.environ.setdefault("HUB_ENVIRONMENT", "local")
    get_settings.cache_clear()
    settings = get_settings()
    configure_logging("ERROR")  # the demo narrates; rejected inputs it sends on purpose need no log line
    started = time.perf_counter()
    out.rule("[bold]Ittai Hub demo")
    out.print("[bold]1. local stack[/] (Apache Kafka KRaft + PostgreSQL)")
    stack.ensure_up()
    out.print(f"   Kafka {settings.kafka_bootstrap}, PostgreSQL {settings.pg_host}:{settings.pg_port}")
    asyncio.run(
        _demo(settings, authorities=authorities, months=months, seed=seed, serve=serve, started=started)
    )


async def _demo(
    settings: Settings, *, authorities: int, months: int, seed: int, serve: bool, started: float
) -> None:
    from devtools.demo.adapters import demo_through_adapters
    from devtools.demo.feed import demo_feed
    from devtools.demo.monitoring import demo_console
    from devtools.demo.shared_view import demo_shared_view
    from devtools.simulator import SimulationConfig, simulate, summarize

    reports = await ensure_topics(settings)
    out.print(
        f"[bold]2. topics[/]: {sum(r.status == 'created' for r in reports)} created, "
        f"{sum(r.status == 'ok' for r in reports)} checked"
    )
    pool = await prepare(settings)
    try:
        subs = list(simulate(SimulationConfig(authorities=authorities, months=months, seed=seed)))
        facts = summarize(subs)
        out.print(
            f"[bold]3. simulator[/]: {len(subs):,} events, {facts['persons']:,} people, {facts['authorities']} "
            f"authorities, {facts['sites']} sites, {months} months (seed {seed}); "
            f"{facts['placements.late']} late placements, {facts['out_of_order']} people out of order"
        )
        out.print(
            "[bold]4. adapters[/]: client systems post through HTTP and CSV (welfare :8081, employment :8082)"
        )
        ingest = await demo_through_adapters(settings, pool, subs, out)
        out.print(
            f"   accepted {ingest.get('http_events_accepted', 0) + ingest.get('csv_rows_accepted', 0):,} "
            f"({ingest.get('http_events_replayed', 0) + ingest.get('csv_rows_duplicate', 0):,} already there), "
            f"rejected {ingest.get('http_events_rejected', 0) + ingest.get('csv_rows_rejected', 0)}"
        )
        out.print(
            "[bold]5. event log[/] (walking skeleton): Kafka → PostgreSQL, effect + offsets in one transaction"
        )
        await _event_log(settings, pool)
        out.print("[bold]6. consented shared view[/]")
        await demo_shared_view(settings, pool, out)
        out.print("[bold]7. monthly placement feed[/]")
        await demo_feed(settings, pool, out)
        out.print(f"[bold green]pipeline done in {time.perf_counter() - started:.1f} s[/]")
        out.print("[bold]8. operator console[/]")
        await demo_console(settings, pool, out, serve=serve)
    finally:
        await pool.close()


async def _event_log(settings: Settings, pool: object) -> None:
    import asyncpg

    from consumers.catchup import run_until_caught_up
    from consumers.event_log import EventLogHandler

    assert isinstance(pool, asyncpg.Pool)
    await run_until_caught_up(EventLogHandler(settings), settings, pool)
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT family, count(*) AS n FROM event_log GROUP BY family ORDER BY family")
        dead = await conn.fetchval("SELECT count(*) FROM dead_letters")
    table = Table(show_edge=False, box=None, padding=(0, 2))
    table.add_column("   family")
    table.add_column("events in event_log", justify="right")
    for r in rows:
        table.add_row(f"   {r['family']}", f"{r['n']:,}")
    out.print(table)
    out.print(f"   dead letters: {dead}")
