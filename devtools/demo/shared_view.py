"""The shared view's step of ``hub demo``: project what is in the topics, then one scoped, recorded read.

The demo prints counts, field names and the access history — never a personal value, since a terminal
is an operator's view.
"""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
from rich.console import Console
from rich.table import Table

from consumers.catchup import end_offsets, progress_of, run_until
from consumers.runtime import ConsumerRuntime
from consumers.shared_view.api import build_app
from consumers.shared_view.handler import SharedViewHandler
from infra.auth import OrgKind, Role, add_client
from infra.config import Settings
from infra.db import AdvisoryLock


async def demo_shared_view(settings: Settings, pool: asyncpg.Pool, out: Console) -> dict[str, int]:
    """Run the shared-view consumer until it has caught up with the topics, print and return counts, and
    make one scoped read through the HTTP API followed by that person's access history."""
    handler = SharedViewHandler(settings)
    ends = await end_offsets(settings, handler.topics)
    async with pool.acquire() as lock_conn:
        if await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", AdvisoryLock.SHARED_VIEW_ROLE):
            try:
                await run_until(ConsumerRuntime(handler, settings, pool), pool, ends, timeout_s=600)
            finally:
                await lock_conn.execute("SELECT pg_advisory_unlock($1)", AdvisoryLock.SHARED_VIEW_ROLE)
        else:  # a live `hub run shared-view` owns the view: wait for it instead
            while True:  # polling a table: there is no event to await
                if await progress_of(lock_conn, handler.name, ends) >= sum(ends.values()):
                    break
                await asyncio.sleep(0.2)
        stats = await lock_conn.fetchrow("SELECT * FROM v_consent_stats")
        held = await lock_conn.fetchval(
            "SELECT count(*) FROM sv_events e WHERE NOT EXISTS "
            "(SELECT 1 FROM sv_persons p WHERE p.person_key = e.person_key)"
        )
        pick = await lock_conn.fetchrow(
            "SELECT person_key, authority FROM sv_persons WHERE authority IS NOT NULL "
            "AND recipient_authorities ? authority AND scopes ? 'share_registration' ORDER BY person_key LIMIT 1"
        )
    counts = {
        "persons_in_view": int(stats["active"]),
        "held_events": int(held),
        "consents_withdrawn": int(stats["withdrawn"]),
        "erased": int(stats["erased"]),
    }
    table = Table(title="consented shared view", show_edge=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    for key, value in counts.items():
        table.add_row(key.replace("_", " "), str(value))
    out.print(table)
    if stats["withdrawal_p50_ms"] is not None:
        out.print(
            f"   withdrawal → removal: p50 {stats['withdrawal_p50_ms']:.0f} ms, "
            f"max {stats['withdrawal_max_ms']:.0f} ms"
        )
    if pick is not None:
        counts["reads_recorded"] = await _one_read(settings, pool, out, pick["person_key"], pick["authority"])
    return counts


async def _one_read(settings: Settings, pool: asyncpg.Pool, out: Console, person: str, authority: str) -> int:
    async with pool.acquire() as conn:
        _, token = await add_client(
            conn,
            name=f"demo-case-worker-{authority}",
            org_kind=OrgKind.AUTHORITY,
            org_code=authority,
            roles=frozenset({Role.READ}),
        )
    app = build_app(settings)
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shared-view") as client,
    ):
        answer = await client.get(
            f"/persons/{person}", params={"purpose": "share_registration"}, headers=headers
        )
        history = await client.get(f"/persons/{person}/access-history", headers=headers)
    reads = history.json()["reads"]
    fields = reads[-1]["fields"] if reads else []
    out.print(
        f"   authority {authority} read person {person} for share_registration: HTTP {answer.status_code}; "
        f"personal fields disclosed (values not shown here): {', '.join(fields)}"
    )
    table = Table(title=f"access history of {person}", show_edge=False)
    for col in ("at", "organisation", "action", "purpose", "outcome", "fields"):
        table.add_column(col)
    for r in reads:
        table.add_row(
            r["at"], r["organisation"], r["action"], r["purpose"], r["outcome"], ", ".join(r["fields"])
        )
    out.print(table)
    return len(reads)
