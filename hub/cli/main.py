"""The ``hub`` command line: one entry point for the stack, topics, services, simulator and tools."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hub.cli.options import ConsumerWorkers, Seed, whole_option
from hub.cli.stack import stack_app
from infra.config import get_settings
from producers.submission import Submission

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Ittai Hub: welfare ⇄ Hello Work event hub"
)
app.add_typer(stack_app, name="stack", help="Local Kafka (KRaft) and PostgreSQL for development and tests")
topics_app = typer.Typer(no_args_is_help=True, add_completion=False)
app.add_typer(topics_app, name="topics", help="Kafka topics of the hub")
db_app = typer.Typer(no_args_is_help=True, add_completion=False)
app.add_typer(db_app, name="db", help="PostgreSQL schema")
run_app = typer.Typer(no_args_is_help=True, add_completion=False)
app.add_typer(run_app, name="run", help="Run one of the hub's services until SIGTERM")
contracts_app = typer.Typer(no_args_is_help=True, add_completion=False)
app.add_typer(contracts_app, name="contracts", help="Event contracts: JSON Schema and AsyncAPI")

out = Console()
err = Console(stderr=True, soft_wrap=True)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending schema migrations."""
    from infra.db import connect, migrate

    async def _main() -> list[str]:
        conn = await connect()
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    applied = asyncio.run(_main())
    out.print(f"applied: {', '.join(applied) if applied else 'nothing (up to date)'}")


@topics_app.command("ensure")
def topics_ensure() -> None:
    """Create missing topics and check existing ones against configuration (mismatches exit 1)."""
    from infra.topics import ensure_topics

    reports = asyncio.run(ensure_topics(get_settings()))
    bad = False
    for r in reports:
        colour = {"created": "green", "ok": "green", "mismatch": "red"}[r.status]
        out.print(f"[{colour}]{r.status:8}[/] {r.topic} {r.detail}")
        bad |= r.status == "mismatch"
    if bad:
        raise typer.Exit(1)


@run_app.command("event-log")
def run_event_log(workers: ConsumerWorkers = 1) -> None:
    """Walking-skeleton consumer: every valid event into the event_log table."""
    from consumers.event_log import EventLogHandler
    from consumers.runtime import ConsumerRuntime
    from infra.runner import run_forever

    run_forever(lambda s, pool: [ConsumerRuntime(EventLogHandler(s), s, pool)], workers=workers)


@run_app.command("relay")
def run_relay() -> None:
    """Outbox relay: publish accepted events to Kafka, in order, once."""
    from infra.runner import run_forever
    from producers.outbox import OutboxRelay

    run_forever(lambda s, pool: [OutboxRelay(s, pool)])


@app.command()
def simulate(
    authorities: Annotated[
        int, whole_option("--authorities", lo=1, hi=100_000, help="How many authorities")
    ] = 3,
    months: Annotated[int, whole_option("--months", lo=1, hi=36, help="How many months")] = 3,
    seed: Seed = 1,
    start: Annotated[str, typer.Option(help="First month, YYYY-MM")] = "2025-04",
    per_site: Annotated[
        int, whole_option("--per-site", lo=1, hi=100_000, help="New registrations per site and month")
    ] = 50,
    to_file: Annotated[
        Path | None, typer.Option(help="Write the stream as JSON lines instead of publishing")
    ] = None,
    from_file: Annotated[
        Path | None, typer.Option(help="Publish a stream written earlier with --to-file")
    ] = None,
    profile: Annotated[
        str,
        typer.Option(
            help="default, or fy2015: the FY2015 programme (159 authorities, 303 sites, Dec 2014 to "
            "Mar 2016, the report's shares; --seed applies, the other sizes are the profile's)"
        ),
    ] = "default",
) -> None:
    """Generate a reproducible, realistic stream and publish it through the outbox (or write it to a file)."""
    from devtools.simulator import SimulationConfig, read_jsonl, summarize, write_jsonl
    from devtools.simulator import simulate as generate

    if profile == "fy2015":
        config = SimulationConfig.fy2015(seed=seed)
    elif profile == "default":
        config = SimulationConfig(
            authorities=authorities,
            months=months,
            seed=seed,
            start_month=start,
            registrations_per_site_month=per_site,
        )
    else:
        raise typer.BadParameter("profile must be default or fy2015", param_hint="--profile")
    if to_file is not None:
        n = write_jsonl(generate(config), to_file)
        out.print(f"wrote {n} submissions to {to_file}")
        return
    from producers.publish import TrustedPathRefused

    if not get_settings().is_local_development():  # before reading anything: the path is refused
        err.print(f"[red]{TrustedPathRefused()}[/]")
        raise typer.Exit(2)
    subs = list(read_jsonl(from_file) if from_file else generate(config))
    n = asyncio.run(_publish(subs))
    out.print(f"published {n} events")
    for key, value in summarize(subs).items():
        out.print(f"  {key:28} {value}")


async def _publish(subs: list[Submission]) -> int:
    from infra.runner import prepare
    from producers.publish import publish_submissions

    settings = get_settings()
    pool = await prepare(settings)
    try:
        with progress_bar() as bar:
            task = bar.add_task("accept → outbox → Kafka", total=len(subs))
            return await publish_submissions(
                settings, pool, subs, origin="simulator", progress=lambda k: bar.advance(task, k)
            )
    finally:
        await pool.close()


@app.command()
def demo(
    authorities: Annotated[int, whole_option("--authorities", lo=1, hi=100_000)] = 4,
    months: Annotated[int, whole_option("--months", lo=1, hi=36)] = 3,
    seed: Seed = 2025,
    serve: Annotated[bool, typer.Option(help="End by serving the operator console until Ctrl-C")] = True,
) -> None:
    """Start the stack and run simulator → adapters → Kafka → consumers → PostgreSQL → console, end to end."""
    from devtools.demo import run_demo

    run_demo(authorities=authorities, months=months, seed=seed, serve=serve)


@contracts_app.command("generate")
def contracts_generate() -> None:
    """Write JSON Schema for each event and the AsyncAPI 3 document into contracts/."""
    from contracts.generate import write_all

    for path in write_all():
        out.print(f"wrote {path}")


@contracts_app.command("check")
def contracts_check() -> None:
    """Fail if the committed contracts drift from the models or break the previous committed version."""
    from contracts.generate import check_all

    problems = check_all()
    for p in problems:
        out.print(f"[red]{p}[/]")
    if problems:
        raise typer.Exit(1)
    out.print("[green]contracts up to date and compatible[/]")


def _register_components() -> None:
    from hub.cli.adapters import register as adapters
    from hub.cli.agreements import register as agreements
    from hub.cli.feed import register as feed
    from hub.cli.monitoring import register as monitoring
    from hub.cli.portal import register as portal
    from hub.cli.shared_view import register as shared_view

    for register in (adapters, shared_view, feed, monitoring, portal, agreements):
        register(app, run_app)


_register_components()

if __name__ == "__main__":
    app()
