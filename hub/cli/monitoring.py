"""CLI commands of this component, registered on the ``hub`` app by ``hub.cli``."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console

from hub.cli.options import whole_option

out = Console()


console_app = typer.Typer(no_args_is_help=True, add_completion=False)


def run_console(
    port: Annotated[
        int | None, whole_option("--port", lo=1, hi=65535, help="Port (default: HUB_CONSOLE_PORT, 8080)")
    ] = None,
) -> None:
    """Operator console: flows, lag, adapters, dead letters (redrive), feeds, consent, metrics."""
    from hub.console.app import create_console_app
    from infra.config import get_settings
    from infra.http import serve
    from infra.logging import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level)
    out.print(f"console on http://{settings.http_host}:{port or settings.console_port}/")
    serve(create_console_app(settings), settings.http_host, port or settings.console_port)


def status() -> None:
    """Flows at a glance: topic end offsets, consumer lag, outbox backlog, dead letters, feeds."""
    from consumers.monitoring.kafka_probe import KafkaProbe
    from consumers.monitoring.snapshot import collect
    from consumers.monitoring.status import render
    from infra.config import get_settings
    from infra.db import create_pool

    async def _main() -> None:
        settings = get_settings()
        pool = await create_pool(settings, max_size=2)
        probe = KafkaProbe(settings)
        try:
            snap = await collect(settings, pool, probe)
        finally:
            await probe.close()
            await pool.close()
        render(snap, out)

    asyncio.run(_main())


@console_app.command("add-operator")
def add_operator(
    name: Annotated[str, typer.Argument(help="Who the operator is (shown in the audit)")],
) -> None:
    """Create an operator client (org kind operator, role operate) and print its token once."""
    from devtools.demo.monitoring import create_operator
    from infra.config import get_settings
    from infra.runner import prepare

    async def _main() -> tuple[str, str]:
        pool = await prepare(get_settings())
        try:
            return await create_operator(pool, name)
        finally:
            await pool.close()

    client_id, token = asyncio.run(_main())
    out.print(f"operator client {client_id} created; its token (shown once):")
    out.print(token, soft_wrap=True, highlight=False)


def register(app: typer.Typer, run_app: typer.Typer) -> None:
    """Add this component's commands: top-level ones on ``app``, services on ``run_app`` (``hub run X``)."""
    app.add_typer(console_app, name="console", help="Operator console: operators' credentials")
    run_app.command("console")(run_console)
    app.command("status")(status)
