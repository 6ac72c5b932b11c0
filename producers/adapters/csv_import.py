"""``hub import FILE``: a batch file imported in-process as the client system its token belongs to.

Same rules as the HTTP upload (authentication, authorisation per row, idempotency per row): the file's
client is found from its token, and the adapter from the client's organisation (authorities use the
welfare adapter, Hello Work the employment adapter).
"""

from __future__ import annotations

import asyncio
from typing import BinaryIO

import asyncpg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from contracts.envelope import Family
from infra.auth import AuthError, OrgKind, Principal, Role, authenticate, require_role
from infra.config import Settings
from infra.crypto import KeyStore
from producers.adapters.authorization import FAMILIES, Adapter, check_client
from producers.adapters.service import AdapterService, ImportSummary
from producers.outbox import OutboxRelay, pending_through


def adapter_for(principal: Principal) -> Adapter:
    return Adapter.WELFARE if principal.org_kind is OrgKind.AUTHORITY else Adapter.EMPLOYMENT


async def import_as_client(
    settings: Settings,
    pool: asyncpg.Pool,
    content: BinaryIO | bytes,
    family: str,
    token: str,
    *,
    wait: bool = True,
    console: Console | None = None,
) -> ImportSummary:
    """Raises AuthError (401/403), FileError (unreadable file) or ValueError (unknown family)."""
    try:
        fam = Family(family)
    except ValueError:
        raise ValueError(
            f"unknown family {family!r}; expected one of {', '.join(f.value for f in Family)}"
        ) from None
    async with pool.acquire() as conn:
        principal = await authenticate(conn, f"Bearer {token}")
    require_role(principal, Role.PUBLISH)
    adapter = adapter_for(principal)
    check_client(adapter, principal)
    if fam not in FAMILIES[adapter]:
        raise AuthError(403, f"the {adapter.value} adapter does not take {fam.value} events")
    service = AdapterService(adapter, settings, pool, KeyStore.from_settings(settings))
    progress = Progress(
        TextColumn("[bold]import {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console or Console(stderr=True),
        transient=False,
    )
    with progress:
        task = progress.add_task(fam.value, total=None)
        summary = await service.import_csv(
            principal,
            fam,
            content,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
        progress.update(task, total=summary.rows, completed=summary.rows)
    if wait and summary.accepted:
        await publish_accepted(settings, pool)
    return summary


async def publish_accepted(settings: Settings, pool: asyncpg.Pool, timeout_s: float = 120.0) -> None:
    """Run a relay until everything accepted so far is in Kafka (another running relay may do the work:
    ours then waits on the advisory lock and is cancelled)."""
    async with pool.acquire() as conn:
        last = await conn.fetchval("SELECT max(id) FROM outbox")
    relay = OutboxRelay(settings, pool)
    task = asyncio.create_task(relay.run())
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            async with pool.acquire() as conn:
                pending = await pending_through(conn, last)
            if not pending:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{pending} accepted events not yet in Kafka after {timeout_s:.0f}s")
            await asyncio.sleep(0.1)
    finally:
        await relay.stop_task(task, grace_s=0.5)
