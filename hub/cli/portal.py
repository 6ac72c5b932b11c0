"""``hub run portal``: the feed portal for authority staff."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from hub.cli.options import whole_option

out = Console()


def register(app: typer.Typer, run_app: typer.Typer) -> None:
    @run_app.command("portal")
    def run_portal(
        port: Annotated[
            int | None, whole_option("--port", lo=1, hi=65535, help="Port (default: HUB_PORTAL_PORT, 8085)")
        ] = None,
    ) -> None:
        """Feed portal for authority staff: this month's feed, revisions, tables, chart, downloads (日本語/English)."""
        from hub.portal.app import create_portal_app
        from infra.config import get_settings
        from infra.http import serve
        from infra.logging import configure_logging

        settings = get_settings()
        configure_logging(settings.log_level)
        out.print(f"feed portal on http://{settings.http_host}:{port or settings.portal_port}/")
        serve(create_portal_app(settings), settings.http_host, port or settings.portal_port)
