"""The demo's last step: an operator and a running console, with its address printed."""

from __future__ import annotations

import asyncio
from contextlib import suppress

import asyncpg
from rich.console import Console

from infra.auth import OrgKind, Role, add_client
from infra.config import Settings
from infra.http import server as http_server


async def create_operator(pool: asyncpg.Pool, name: str) -> tuple[str, str]:
    """A client of the operators' team with role ``operate``; returns (client_id, token)."""
    async with pool.acquire() as conn:
        return await add_client(
            conn, name=name, org_kind=OrgKind.OPERATOR, org_code="*", roles=frozenset({Role.OPERATE})
        )


async def demo_console(settings: Settings, pool: asyncpg.Pool, out: Console, *, serve: bool = True) -> str:
    """Create a demo operator, print its token and the console's address, and (``serve``) run the console
    until Ctrl-C. Returns the console URL. With ``serve=False`` it only prints how to start it."""
    _, token = await create_operator(pool, "demo operator")
    url = f"http://{settings.http_host}:{settings.console_port}/"
    out.print(f"   operator console: [bold]{url}[/]")
    out.print(f"   operator token (paste it on the login page): {token}", soft_wrap=True, highlight=False)
    out.print("   terminal view of the same figures: [bold]hub status[/]")
    if not serve:
        out.print("   start it with: [bold]hub run console[/]")
        return url
    from hub.console.app import create_console_app

    server = http_server(create_console_app(settings), settings.http_host, settings.console_port)
    out.print("   console running — Ctrl-C to stop")
    with suppress(asyncio.CancelledError, KeyboardInterrupt):
        await server.serve()
    return url
