"""The README's demo: a fresh machine to a populated hub, end to end, with a short printed summary."""

from __future__ import annotations

import asyncio
import time

from rich.console import Console
from rich.table import Table

from consumers.event_log import EventLogHandler
from consumers.runtime import ConsumerRuntime
from hub import stack
from hub.config import Settings, get_settings
from hub.logging import configure_logging
from hub.runner import prepare
from hub.topics import ensure_topics

out = Console()


def run_demo(*, authorities: int, months: int, seed: int) -> None:
    settings = get_settings()
    configure_logging("WARNING")
    started = time.perf_counter()
    out.rule("[bold]Ittai Hub demo")
    out.print("1. local stack (Kafka KRaft + PostgreSQL) …")
    stack.ensure_up()
    out.print(f"   Kafka {settings.kafka_bootstrap}, PostgreSQL {settings.pg_host}:{settings.pg_port}")
    asyncio.run(_demo(settings, authorities=authorities, months=months, seed=seed))
    out.print(f"[bold green]demo finished in {time.perf_counter() - started:.1f} s[/]")


async def _demo(settings: Settings, *, authorities: int, months: int, seed: int) -> None:
    from hub.cli import progress_bar
    from hub.publish import publish_submissions
    from producers.simulator import SimulationConfig, simulate, summarize

    reports = await ensure_topics(settings)
    out.print(
        f"2. topics: {sum(r.status == 'created' for r in reports)} created, "
        f"{sum(r.status == 'ok' for r in reports)} already there"
    )
    pool = await prepare(settings)
    try:
        async with pool.acquire() as conn:
            before = await conn.fetchval("SELECT count(*) FROM event_log")
        subs = list(simulate(SimulationConfig(authorities=authorities, months=months, seed=seed)))
        out.print(
            f"3. simulator: {len(subs)} events for {authorities} authorities over {months} months (seed {seed})"
        )
        with progress_bar() as bar:
            task = bar.add_task("   accept → outbox → Kafka", total=len(subs))
            await publish_submissions(
                settings, pool, subs, origin="demo", progress=lambda k: bar.advance(task, k)
            )
        out.print("4. event-log consumer: Kafka → PostgreSQL (one transaction per batch, offsets included)")
        runtime = ConsumerRuntime(EventLogHandler(settings), settings, pool)
        consumer = asyncio.create_task(runtime.run())
        expected = before + len({s.event_id for s in subs})
        deadline = time.monotonic() + 120
        async with pool.acquire() as conn:
            while time.monotonic() < deadline:
                count = await conn.fetchval("SELECT count(*) FROM event_log")
                if count >= expected:
                    break
                await asyncio.sleep(0.25)
            runtime.stop()
            await consumer
            rows = await conn.fetch(
                "SELECT family, count(*) AS n FROM event_log GROUP BY family ORDER BY family"
            )
            dead = await conn.fetchval("SELECT count(*) FROM dead_letters")
        table = Table(title="event_log in PostgreSQL", show_edge=False)
        table.add_column("family")
        table.add_column("events", justify="right")
        for r in rows:
            table.add_row(r["family"], str(r["n"]))
        out.print(table)
        out.print(f"   dead letters: {dead}")
        for k, v in summarize(subs).items():
            out.print(f"   simulated {k}: {v}")
    finally:
        await pool.close()
